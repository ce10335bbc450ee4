"""The OFT recipe as configuration: chunks, parallel decoding, the L1 head, proprio and a wrist camera."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openvla import VLA, get_preset
from openvla.train.batching import Collator, sample_builder

TASKS = ["open the drawer", "push the button"]
STATS = {"toy": {"action": {"q01": [-2.0] * 4, "q99": [2.0] * 4, "mask": [True, True, True, False]},
                 "proprio": {"q01": [0.0] * 3, "q99": [10.0] * 3}}}


def _oft_model(head: str, chunk: int = 4, proprio: int = 3, images: int = 2, queries: str = "zeros") -> VLA:
    cfg = get_preset("tiny")
    cfg.action_queries = queries
    for v in cfg.vision:
        v.image_size = 56  # 16 patches per camera keeps this test fast
    cfg.action_dim, cfg.action_chunk, cfg.parallel_decoding = 4, chunk, True
    cfg.action_head, cfg.proprio_dim, cfg.cameras = head, proprio, ["image", "wrist"][:images]
    cfg.norm_stats = STATS
    return VLA.create(cfg, TASKS, seed=0)


def _data(vla: VLA, n: int = 4):
    rng = np.random.default_rng(0)
    builder = sample_builder(vla.processor)
    frames = []
    for i in range(n):
        frames.append({"images": {"image": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
                                  "wrist": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)},
                       "actions": rng.uniform(-0.9, 0.9, (vla.config.action_chunk, 4)).astype(np.float32),
                       "state": rng.uniform(-1, 1, 3).astype(np.float32), "instruction": TASKS[i % 2]})
    return frames, Collator(vla.tokenizer.pad_token_id)([builder(f) for f in frames])


def _fit(vla: VLA, batch: dict, steps: int) -> tuple[dict, float, float]:
    """AdamW on one fixed batch; returns the model inputs and the first and last losses."""
    opt = torch.optim.AdamW(vla.parameters(), lr=3e-3)
    inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "labels", "proprio", "actions")}
    first = vla(**inputs).loss.item()
    for _ in range(steps):
        loss = vla(**inputs).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return inputs, first, loss.item()


@pytest.mark.parametrize("head", ["l1", "tokens"])
def test_parallel_decoding_model_fits_and_predicts_unnormalised_chunks(head):
    torch.manual_seed(0)
    vla = _oft_model(head)
    frames, batch = _data(vla)
    inputs, first, last = _fit(vla, batch, steps=30)
    assert last < 0.8 * first
    vla.eval()
    raw_state = [50 + 0 * f["state"] for f in frames]  # clipped to +1 by the proprio bounds
    out = vla.predict_action(image=[f["images"]["image"] for f in frames], instruction=[f["instruction"] for f in frames],
                             wrist_image=[f["images"]["wrist"] for f in frames], proprio=np.stack(raw_state))
    assert out.shape == (4, 4, 4)
    # un-normalisation: dims with mask True map [-1, 1] to [q01, q99] = [-2, 2]; the gripper passes through
    assert np.abs(out[..., :3]).max() <= 2.0 + 1e-6 and np.abs(out[..., 3]).max() <= 1.0 + 1e-6
    single = vla.predict_action(image=frames[0]["images"]["image"], instruction=frames[0]["instruction"],
                                wrist_image=frames[0]["images"]["wrist"], proprio=raw_state[0])
    assert single.shape == (4, 4)
    np.testing.assert_allclose(single, out[0], atol=1e-5)


@pytest.mark.parametrize("queries", ["zeros", "learned"])
def test_parallel_model_learns_and_inference_matches_the_training_pass(queries, tmp_path):
    torch.manual_seed(0)
    vla = _oft_model("l1", queries=queries)
    frames, batch = _data(vla)
    inputs, first, last = _fit(vla, batch, steps=100)
    assert last < 0.3 * first
    vla.eval()
    with torch.no_grad():
        trained = vla(**inputs).predicted_actions
    ids, mask = vla.pack_prompts([vla.processor.tokenize(f["instruction"]) for f in frames])
    normalized = vla.parallel_decode(ids, batch["pixel_values"], mask, batch["proprio"])
    torch.testing.assert_close(normalized, trained.clamp(-1, 1), atol=1e-5, rtol=0)  # inference clamps
    if queries == "learned":  # the queries trained and travel with the checkpoint
        assert vla.action_queries.shape == (16, vla.config.llm_dim) and vla.action_queries.grad.abs().sum() > 0
        loaded = VLA.from_pretrained(vla.save_pretrained(tmp_path / "ckpt")).eval()
        again = loaded.parallel_decode(ids, batch["pixel_values"], mask, batch["proprio"])
        torch.testing.assert_close(again, normalized)


def test_autoregressive_chunks_batched_equal_unbatched():
    cfg = get_preset("tiny")
    cfg.action_chunk = 3
    vla = VLA.create(cfg, TASKS, seed=1)
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
    texts = ["open the drawer", "push the button now", "open"]
    batched = vla.predict_action(image=imgs, instruction=texts)
    assert batched.shape == (3, 3, 7)
    for i in range(3):
        np.testing.assert_array_equal(vla.predict_action(image=imgs[i], instruction=texts[i]), batched[i])


def test_missing_extra_inputs_are_clear_errors():
    vla = _oft_model("l1")
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="no 'wrist' image"):
        vla.predict_action(image=img, instruction="open the drawer", proprio=np.zeros(3))
    with pytest.raises(ValueError, match="pass proprio"):
        vla.predict_action(image=img, instruction="open the drawer", wrist_image=img)
    with pytest.raises(ValueError, match="needs parallel_decoding"):
        cfg = get_preset("tiny")
        cfg.action_head = "l1"
        VLA(cfg)
    cfg = get_preset("tiny")
    cfg.action_queries = "learned"
    with pytest.raises(ValueError, match="needs parallel_decoding"):
        VLA(cfg)
    cfg.action_queries = "random"
    with pytest.raises(ValueError, match="unknown action_queries"):
        VLA(cfg)


def test_film_conditions_vision_on_the_instruction_and_is_the_plain_block_when_zero(tmp_path):
    cfg = get_preset("tiny")
    for v in cfg.vision:
        v.image_size = 56
    cfg.action_dim, cfg.action_chunk, cfg.parallel_decoding, cfg.action_head = 4, 2, True, "l1"
    plain = VLA.create(cfg, TASKS, seed=0).eval()
    cfg.film = True
    vla = VLA.create(cfg, TASKS, seed=0).eval()
    vla.load_state_dict(plain.state_dict(), strict=False)  # same weights; FiLM's own come on top
    pixels = torch.randn(2, 6, 56, 56)
    lang = torch.randn(2, cfg.llm_dim)
    with torch.no_grad():
        for p in vla.film.parameters():
            p.zero_()  # gamma = beta = 0: the FiLM block is the plain one (test_vision: that one is transformers')
        torch.testing.assert_close(vla.embed_images(pixels, lang), plain.embed_images(pixels), rtol=0, atol=1e-6)
        for block in (b for vit in vla.film.vits for b in vit):
            torch.nn.init.normal_(block.scale.weight, std=0.5)
            torch.nn.init.normal_(block.shift.weight, std=0.5)
        a, b = vla.embed_images(pixels, lang), vla.embed_images(pixels, lang.flip(0))
        assert (a[0] - b[0]).abs().max() > 1e-3  # another instruction, other visual features
    assert len(vla.film.vits) == 2 and len(vla.film.vits[0]) == cfg.vision[0].blocks_run
    # it trains (the loss falls), predicts per instruction, and reloads the same
    cfg2 = _oft_model("l1", chunk=2).config  # with proprio and a wrist camera
    cfg2.film = True
    model = VLA.create(cfg2, TASKS, seed=0)
    frames, batch = _data(model)
    inputs, first, last = _fit(model, batch, steps=40)
    assert last < 0.5 * first
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.film.parameters())
    model.eval()
    ids, mask = model.pack_prompts([model.processor.tokenize(f["instruction"]) for f in frames])
    out = model.parallel_decode(ids, batch["pixel_values"], mask, batch["proprio"])
    again = VLA.from_pretrained(model.save_pretrained(tmp_path / "film")).eval()
    torch.testing.assert_close(again.parallel_decode(ids, batch["pixel_values"], mask, batch["proprio"]), out)
    cfg3 = get_preset("tiny")
    cfg3.film = True
    with pytest.raises(ValueError, match="film needs parallel_decoding"):
        VLA(cfg3)


def test_cli_predict_takes_every_input_the_model_takes(tmp_path, capsys):
    """A 2-camera model with proprio: `openvla predict` passes the second camera by name and the state."""
    from PIL import Image

    from openvla.cli import main

    vla = _oft_model("l1")
    vla.save_pretrained(tmp_path / "ck")
    rng = np.random.default_rng(0)
    image, wrist = (rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for _ in range(2))
    Image.fromarray(image).save(tmp_path / "image.png")
    Image.fromarray(wrist).save(tmp_path / "wrist.png")
    args = ["predict", "--checkpoint", str(tmp_path / "ck"), "--image", str(tmp_path / "image.png"),
            "--instruction", "open the drawer", "--unnorm-key", "toy"]
    assert main(args + ["--camera", f"wrist={tmp_path / 'wrist.png'}", "--proprio", "1,5,9"]) == 0
    printed = capsys.readouterr().out.replace("[", " ").replace("]", " ").replace(",", " ").split()
    expected = vla.predict_action(image=image, images={"wrist": wrist}, instruction="open the drawer",
                                  proprio=np.float32([1, 5, 9]), unnorm_key="toy")
    np.testing.assert_allclose(np.array(printed, float).reshape(expected.shape), expected, atol=1e-4)
    assert main(args + ["--proprio", "1,5,9"]) == 2
    assert "no 'wrist' image" in capsys.readouterr().err
