"""The hot paths in CPU time (process_time: steadier than wall time when other jobs share the machine): greedy
decoding, parallel decoding at batch 1 and 8, predict_action from a raw frame, and one full training step of the
small preset (tokens head, and chunk-8 L1 head) at batch 32. One thread. Prints one JSON line of medians.

Compare two versions in one sitting: ``PYTHONPATH=<other checkout>/src python benchmarks/hot_paths.py``,
alternating with this checkout's run (it uses only APIs both sides of the heads redesign have)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import torch

from openvla import VLA, get_preset

PROMPT = "pick up the block"


def build(**overrides) -> VLA:
    cfg = get_preset("small")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    return VLA.create(cfg, [PROMPT], seed=0)


def median_ms(fn: Callable[[], object], n: int = 30) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(n):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return round(1000 * float(np.median(times)), 2)


def training_step(model: VLA, prompt: list[int], n_actions: int) -> Callable[[], None]:
    """One AdamW step on a fixed batch of 32 (random pixels and action ids; L1 models get actions too)."""
    g = torch.Generator().manual_seed(0)
    acts = torch.randint(1024 - 256, 1024, (32, n_actions), generator=g)
    ids = torch.cat([torch.tensor([prompt] * 32), acts, torch.full((32, 1), 2)], 1)
    labels = ids.clone()
    labels[:, : len(prompt)] = -100
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
             "pixel_values": torch.randn(32, 6, 96, 96, generator=g)}
    if model.config.action_chunk > 1:
        batch["actions"] = torch.rand(32, model.config.action_chunk, 7, generator=g) * 2 - 1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def main() -> None:
    torch.set_num_threads(1)
    vla = build().eval()
    oft = build(action_chunk=8, parallel_decoding=True, action_head="l1").eval()
    prompt = vla.processor.tokenize(PROMPT)

    def inputs(b: int):
        ids, mask = vla.pack_prompts([prompt] * b)
        return ids, torch.randn(b, 6, 96, 96), mask

    i1, i8 = inputs(1), inputs(8)
    out = {}
    with torch.inference_mode():
        out["ar_b1_ms"] = median_ms(lambda: vla.generate_action_ids(*i1, 7))
        out["par_b1_ms"] = median_ms(lambda: oft.parallel_decode(*i1))
        out["par_b8_ms"] = median_ms(lambda: oft.parallel_decode(*i8))
    image = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    out["predict_b1_ms"] = median_ms(lambda: oft.predict_action(image=image, instruction=PROMPT))
    full_prompt = prompt + [vla.config.empty_token_id]
    out["train_tokens_ms"] = median_ms(training_step(build(), full_prompt, 7), n=8)
    l1 = build(action_chunk=8, parallel_decoding=True, action_head="l1")
    out["train_l1_ms"] = median_ms(training_step(l1, full_prompt, 56), n=8)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
