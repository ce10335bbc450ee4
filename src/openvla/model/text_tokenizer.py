"""A small byte-level BPE tokenizer for models trained from scratch, laid out like OpenVLA's:
BOS/EOS/empty token first, the action bins as the last ``n_action_bins`` ids, then <PAD>."""

from __future__ import annotations

from collections.abc import Iterable

from openvla.model.llm_spec import build_prompt

SPECIALS = ["<unk>", "<s>", "</s>", "▁"]  # ids 0..3; "▁" is the empty token before the action tokens
EMPTY_TOKEN_ID = 3
_BASE_CORPUS = ["pick up the object and place it in the bin", "push the button", "open the drawer",
                "close the door", "move the block to the goal", "reach the target"]


def train_tokenizer(texts: Iterable[str], vocab_size: int, n_action_bins: int = 256):
    """Train on prompts built from ``texts``; ``vocab_size`` counts everything but <PAD> (32000 for Llama-2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    text_budget = vocab_size - n_action_bins
    if text_budget < len(SPECIALS) + 256:
        raise ValueError(f"vocab_size {vocab_size} leaves no room for bytes and {n_action_bins} action bins")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=text_budget, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [build_prompt(t) for t in [*_BASE_CORPUS, *texts]]
    tok.train_from_iterator(corpus, trainer=trainer)
    filler = [f"<unused_{i}>" for i in range(text_budget - tok.get_vocab_size())]
    tok.add_tokens(filler)  # small corpora learn fewer merges: pad so actions land on the last ids
    tok.add_special_tokens([f"<act_{i}>" for i in range(n_action_bins)] + ["<PAD>"])
    if tok.get_vocab_size() != vocab_size + 1:
        raise RuntimeError(f"tokenizer layout is off: {tok.get_vocab_size()} ids for vocab {vocab_size} + PAD")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<PAD>", model_max_length=2048)
