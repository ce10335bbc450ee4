"""The hot paths in CPU time (process_time: steadier than wall time when other jobs share the machine): greedy
decoding, parallel decoding at batch 1 and 8, predict_action from a raw frame, and one full training step of the
small preset (tokens head, and chunk-8 L1 head) at batch 32. One thread. Prints one JSON line of medians.

Compare two versions in one sitting: ``PYTHONPATH=<other checkout>/src python benchmarks/hot_paths.py``,
alternating with this checkout's run."""
import json
import time

import numpy as np
import torch

torch.set_num_threads(1)
from openvla import VLA, get_preset


def build(**kw):
    cfg = get_preset("small")
    for k, v in kw.items(): setattr(cfg, k, v)
    torch.manual_seed(0)
    return VLA.create(cfg, ["pick up the block"], seed=0)
vla = build().eval()
oft = build(action_chunk=8, parallel_decoding=True, action_head="l1").eval()
def inputs(b):
    ids, mask = vla.pack_prompts([vla.processor.tokenize("pick up the block")] * b)
    return ids, torch.randn(b, 6, 96, 96), mask
i1, i8 = inputs(1), inputs(8)
def med(fn, n=30):
    for _ in range(3): fn()
    t = []
    for _ in range(n):
        t0 = time.process_time(); fn(); t.append(time.process_time() - t0)
    return round(1000 * float(np.median(t)), 2)
out = {}
with torch.inference_mode():
    out["ar_b1_ms"] = med(lambda: vla.generate_action_ids(*i1, 7))
    out["par_b1_ms"] = med(lambda: oft.parallel_decode(*i1))
    out["par_b8_ms"] = med(lambda: oft.parallel_decode(*i8))
img = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
out["predict_b1_ms"] = med(lambda: oft.predict_action(image=img, instruction="pick up the block"))
# one training step, full mode, batch 32, tokens head and L1 chunk-8 head
for name, model, n_act in (("train_tokens_ms", build(), 7), ("train_l1_ms", build(action_chunk=8, parallel_decoding=True, action_head="l1"), 56)):
    model.train()
    prompt = vla.processor.tokenize("pick up the block") + [3]
    g = torch.Generator().manual_seed(0)
    acts = torch.randint(1024 - 256, 1024, (32, n_act), generator=g)
    ids = torch.cat([torch.tensor([prompt] * 32), acts, torch.full((32, 1), 2)], 1)
    labels = ids.clone(); labels[:, :len(prompt)] = -100
    batch = dict(input_ids=ids, labels=labels, attention_mask=torch.ones_like(ids), pixel_values=torch.randn(32, 6, 96, 96))
    if n_act == 56:
        batch["actions"] = torch.rand(32, 8, 7) * 2 - 1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    def step():
        loss = model(**batch).loss; opt.zero_grad(); loss.backward(); opt.step()
    out[name] = med(step, n=8)
print(json.dumps(out))
