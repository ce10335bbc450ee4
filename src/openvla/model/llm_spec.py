"""What the VLA needs to know about its language model, in one place: the prompt, the token that ends it before
the actions, BOS/EOS/padding, and the ids reserved for actions (checked against the tokenizer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROMPT = "In: What action should the robot take to {instruction}?\nOut:"


def build_prompt(instruction: str, template: str = PROMPT) -> str:
    """The OpenVLA inference prompt (no trailing space; the model appends the empty token itself)."""
    return template.format(instruction=instruction.lower())


@dataclass(frozen=True)
class LLMSpec:
    """Backbone facts of a VLA's LM. Action ids are the last ``n_action_bins`` ids below ``action_vocab_size``
    (the vocabulary without its padding: 32000 for Llama-2, so 31744..31999)."""

    prompt: str
    empty_token_id: int  # "▁" (29871 for Llama-2): the prompt ends with it before the action tokens
    eos_token_id: int
    pad_token_id: int
    action_vocab_size: int
    n_action_bins: int

    @classmethod
    def from_config(cls, config: Any) -> LLMSpec:
        llm = config.llm
        return cls(prompt=config.prompt, empty_token_id=config.empty_token_id,
                   eos_token_id=int(llm.get("eos_token_id", 2)), pad_token_id=int(llm.get("pad_token_id") or 0),
                   action_vocab_size=config.action_vocab_size, n_action_bins=config.n_action_bins)

    @property
    def action_ids(self) -> range:
        return range(self.action_vocab_size - self.n_action_bins, self.action_vocab_size)

    def prompt_ids(self, tokenizer: Any, instruction: str) -> list[int]:
        """The prompt's ids, BOS first, without the empty token (the model appends it)."""
        return list(tokenizer(build_prompt(instruction, self.prompt), add_special_tokens=True)["input_ids"])

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Refuse a tokenizer whose special tokens fall on the action ids, or that lacks the empty token (a
        vocabulary like Qwen2.5's ends in special tokens: its actions must be placed below them)."""
        size = len(tokenizer)
        if self.empty_token_id >= size:
            raise ValueError(f"empty_token_id {self.empty_token_id} is outside the tokenizer's {size} ids")
        ids = self.action_ids
        clash = sorted(i for i in getattr(tokenizer, "all_special_ids", []) if ids.start <= i < ids.stop)
        if clash:
            raise ValueError(f"the action ids {ids.start}..{ids.stop - 1} cover the tokenizer's special tokens "
                             f"{clash}: set pad_to_multiple_of so actions end below them")
        if ids.stop > size:
            raise ValueError(f"the action ids end at {ids.stop - 1}, beyond the tokenizer's {size} ids")
