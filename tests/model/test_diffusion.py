"""OFT's diffusion action head: the DDIM schedule against an exact noise oracle, and the head trained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_oft import _data, _oft_model

from openvla import VLA
from openvla.model.diffusion import DDIMSchedule, timestep_embedding


@pytest.mark.parametrize("steps", [50, 10, 1])
def test_ddim_with_the_true_noise_recovers_the_clean_actions(steps):
    """A predictor that knows the clean sample returns exactly the noise in x_t; DDIM must then land on it."""
    schedule = DDIMSchedule(50)
    clean = torch.rand(3, 8, 7) * 1.8 - 0.9
    sample = torch.randn(3, 8, 7)
    for t in schedule.timesteps(steps):
        a = schedule.alphas_cumprod[t]
        noise = (sample - a.sqrt() * clean) / (1 - a).sqrt()
        sample = schedule.step(noise, t, steps, sample)
    torch.testing.assert_close(sample, clean, atol=1e-4, rtol=0)
    # noising at t then reading the noise back is the identity
    t = torch.tensor([0, 17, 49])
    noise = torch.randn(3, 8, 7)
    noisy = schedule.add_noise(clean, noise, t)
    a = schedule.alphas_cumprod[t][:, None, None]
    torch.testing.assert_close((noisy - a.sqrt() * clean) / (1 - a).sqrt(), noise, atol=1e-4, rtol=0)
    assert schedule.alphas_cumprod[0] > 0.99 and schedule.alphas_cumprod[-1] < 0.01  # nearly clean -> nearly noise


def test_timestep_encoding_is_sin_then_cos():
    emb = timestep_embedding(torch.tensor([0, 3]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert not torch.allclose(emb[0], emb[1])


def test_diffusion_head_learns_and_samples_deterministic_unnormalised_chunks(tmp_path):
    torch.manual_seed(0)
    vla = _oft_model("l1", chunk=2)
    cfg = vla.config
    cfg.action_head, cfg.diffusion_steps = "diffusion", 10
    vla = VLA.create(cfg, ["open the drawer", "push the button"], seed=0)
    assert cfg.num_prefix_tokens == 2 * 16 + 1 + 1  # two cameras, proprio, the timestep token
    frames, batch = _data(vla)
    inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "labels", "proprio", "actions")}
    opt = torch.optim.AdamW(vla.parameters(), lr=1e-3)
    losses = []
    for _ in range(800):  # noise prediction needs far more steps than the L1 head on this 64-wide LM
        loss = vla(**inputs).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-50:]) < 0.2 * np.mean(losses[:10])  # from ~1 (predicting no noise)
    vla.eval()
    ids, mask = vla.pack_prompts([vla.processor.tokenize(f["instruction"]) for f in frames])
    sampled = vla.parallel_decode(ids, batch["pixel_values"], mask, batch["proprio"])
    assert sampled.shape == (4, 2, 4) and sampled.abs().max() <= 1.0
    error = (sampled - batch["actions"]).abs().mean()
    assert error < 0.7 * batch["actions"].abs().mean()  # DDIM samples the fitted actions, closer than zeros
    torch.testing.assert_close(vla.parallel_decode(ids, batch["pixel_values"], mask, batch["proprio"]), sampled)
    alone = vla.parallel_decode(ids[2:3], batch["pixel_values"][2:3], None if mask is None else mask[2:3],
                                batch["proprio"][2:3])
    torch.testing.assert_close(alone[0], sampled[2], atol=1e-5, rtol=0)  # batched rows sample as if alone
    again = VLA.from_pretrained(vla.save_pretrained(tmp_path / "diffusion")).eval()
    torch.testing.assert_close(again.parallel_decode(ids, batch["pixel_values"], mask, batch["proprio"]), sampled)
    out = vla.predict_action(image=frames[0]["images"]["image"], instruction=frames[0]["instruction"],
                             wrist_image=frames[0]["images"]["wrist"], proprio=np.array([50.0, 50.0, 50.0]))
    assert out.shape == (2, 4) and np.abs(out[:, :3]).max() <= 2.0 + 1e-6  # [-1, 1] -> [q01, q99] = [-2, 2]
