"""The successors' heads beyond the contract: FAST round-trips training chunks within the 256-bin tokenizer's error,
decodes a chunk in fewer LLM passes than binned tokens (measured), and decodes malformed sequences to its
fallback; flow and FAST rows decode the same batched as alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openvla import VLA, get_preset
from openvla.model import decoding
from openvla.model.fast_tokenizer import FastTokenizer, bins_errors, report
from openvla.model.heads.fast import FastHead
from openvla.model.vla import ModelInputs
from openvla.train import fast
from openvla.train.batching import Collator, sample_builder

TASKS = ["open the drawer", "push the button"]
CHUNK, DIM = 8, 2


def smooth_chunks(n: int, seed: int = 0) -> np.ndarray:
    """Training-like chunks [n, CHUNK, DIM]: slow sinusoids that saturate at +-1, as scripted experts' do."""
    rng = np.random.default_rng(seed)
    t = np.arange(CHUNK)[None, :, None]
    freq, phase = rng.uniform(0.02, 0.15, (n, 1, DIM)), rng.uniform(0, 6.3, (n, 1, DIM))
    amp = rng.uniform(0.3, 1.5, (n, 1, DIM))
    return np.clip(amp * np.sin(freq * t + phase), -1, 1)


@pytest.fixture(scope="module")
def codec() -> FastTokenizer:
    """The tiny model's codec: its 256 reserved ids hold a coarse scale (fewer tokens, larger error)."""
    return FastTokenizer.fit(smooth_chunks(2000), vocab_size=256, scale=20)


def test_fast_round_trips_training_chunks_within_the_bin_error():
    chunks = smooth_chunks(2000)
    default = fast.fit(chunks, vocab_size=1024)  # the scale `openvla train` chooses: the bins' mean error
    stats = report(default, chunks[:500])  # chunks it was trained on
    assert stats["fast_mean_abs_error"] <= stats["bins_mean_abs_error"], stats
    assert stats["compression"] > 1.5, stats
    every = fast.fit(chunks, vocab_size=3072, match="max")  # within half a bin on every value
    fine = report(every, chunks[:500])
    assert fine["fast_max_abs_error"] <= fine["bins_max_abs_error"], fine
    assert every.scale > default.scale and fine["compression"] > 1.2, fine
    again = FastTokenizer.from_dict(default.to_dict())  # as a checkpoint's config carries it
    chunk = smooth_chunks(1, seed=5)[0]
    assert again.encode(chunk) == default.encode(chunk)


def test_a_vocabulary_too_small_for_the_bin_error_warns_and_takes_the_finest_scale_that_fits():
    chunks = smooth_chunks(2000)
    with pytest.warns(UserWarning, match="max round-trip error exceeds the 256-bin tokenizer's"):
        codec = fast.fit(chunks, vocab_size=128, match="max")
    assert codec.n_symbols <= 96
    assert report(codec, chunks[:200])["fast_max_abs_error"] > bins_errors(chunks)["max"]


def _model(head: str, codec: FastTokenizer | None = None) -> VLA:
    cfg = get_preset("tiny")
    for v in cfg.vision:
        v.image_size = 56
    cfg.action_head, cfg.action_dim, cfg.action_chunk = head, DIM, CHUNK
    cfg.parallel_decoding = head == "flow"
    cfg.fast_tokenizer = None if codec is None else codec.to_dict()
    cfg.flow_steps = 3
    return VLA.create(cfg, TASKS, seed=0)


def _batch(vla: VLA, actions: np.ndarray) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (len(actions), 40, 48, 3), dtype=np.uint8)
    frames = [{"images": {"image": images[i]}, "actions": actions[i].astype(np.float32),
               "instruction": TASKS[i % 2], "seed": i} for i in range(len(actions))]
    build = sample_builder(vla.processor)
    return Collator(vla.llm.pad_token_id)([build(f) for f in frames])


def _fit(vla: VLA, batch: dict, steps: int) -> None:
    inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "labels", "actions", "action_mask")}
    opt = torch.optim.AdamW(vla.parameters(), lr=3e-3)
    torch.manual_seed(1)
    for _ in range(steps):
        loss = vla(**inputs).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    vla.eval()


def _prompts(vla: VLA, batch: dict) -> tuple[list[list[int]], torch.Tensor]:
    rows = [ids[: int((lab != -100).long().argmax())].tolist()
            for ids, lab in zip(batch["input_ids"], batch["labels"], strict=True)]
    return rows, batch["pixel_values"]


def _passes(vla: VLA, batch: dict, monkeypatch) -> float:
    """LLM passes per chunk, counted at the decoder: each call of decode_step is one pass."""
    calls = []
    real = decoding.decode_step
    monkeypatch.setattr(decoding, "decode_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    prompts, pixels = _prompts(vla, batch)
    for i in range(len(prompts)):  # one chunk at a time, as a robot asks
        ids, mask = vla.pack_prompts([prompts[i]])
        vla.sample_actions(ModelInputs(ids, pixels[i:i + 1], mask))
    monkeypatch.setattr(decoding, "decode_step", real)
    return len(calls) / len(prompts)


def test_fast_decodes_a_chunk_in_fewer_llm_passes_than_binned_tokens(codec, monkeypatch):
    actions = smooth_chunks(4, seed=3)
    fast, tokens = _model("fast", codec), _model("tokens")
    fast_batch, token_batch = _batch(fast, actions), _batch(tokens, actions)
    _fit(fast, fast_batch, 40)
    _fit(tokens, token_batch, 40)
    fast_passes, token_passes = _passes(fast, fast_batch, monkeypatch), _passes(tokens, token_batch, monkeypatch)
    target_lengths = [len(codec.encode(a)) + 1 for a in actions]  # FAST tokens + EOS
    assert token_passes == CHUNK * DIM
    assert fast_passes == pytest.approx(np.mean(target_lengths))  # it learned where EOS goes
    assert fast_passes < token_passes / 2
    assert fast.action_head.malformed == 0 and fast.action_head.repaired == 0


def test_fast_decodes_malformed_sequences_to_the_fallback(codec):
    head = _model("fast", codec).action_head
    assert isinstance(head, FastHead)
    eos, top = head.spec.eos_token_id, head.spec.action_ids.stop - 1
    good = [top - k for k in codec.encode(smooth_chunks(1, seed=9)[0])]
    np.testing.assert_allclose(head.decode(good + [eos]), codec.decode(codec.encode(smooth_chunks(1, seed=9)[0])))
    assert (head.malformed, head.repaired) == (0, 0)
    with pytest.warns(UserWarning, match="not FAST tokens"):
        fallback = head.decode([5, 6, eos])  # text ids, not FAST tokens
    np.testing.assert_array_equal(fallback, np.zeros((CHUNK, DIM)))
    np.testing.assert_array_equal(head.decode([eos]), np.zeros((CHUNK, DIM)))  # nothing before EOS
    assert head.malformed == 2
    with pytest.warns(UserWarning, match="wrong number"):
        short = head.decode(good[:1] + [eos])  # too few coefficients: the missing high frequencies are 0
    assert short.shape == (CHUNK, DIM) and np.isfinite(short).all()
    long = head.decode(good + good + [eos])  # too many (and no EOS would read the whole row the same way)
    np.testing.assert_allclose(long, head.decode(good + [eos]))
    assert head.repaired == 2
    assert codec.decode([codec.vocab_size]) is None and codec.decode(codec.encode(np.zeros((CHUNK, DIM)))[:1]) is None


@pytest.mark.parametrize("head", ["flow", "fast"])
def test_rows_decode_the_same_batched_as_alone(head, codec):
    vla = _model(head, codec).eval()
    batch = _batch(vla, smooth_chunks(3, seed=4))
    prompts, pixels = _prompts(vla, batch)
    ids, mask = vla.pack_prompts(prompts)
    together = vla.sample_actions(ModelInputs(ids, pixels, mask))
    for i, p in enumerate(prompts):
        one, one_mask = vla.pack_prompts([p])
        np.testing.assert_allclose(vla.sample_actions(ModelInputs(one, pixels[i:i + 1], one_mask))[0], together[i],
                                   atol=1e-5)
