"""Forward/loss/metrics, batched inference and the CLI on a tiny model trained from scratch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openvla import VLA, get_preset
from openvla.cli import main


def test_forward_metrics_count_action_tokens_only(tiny_vla):
    tok = tiny_vla.action_tokenizer
    prompt = tiny_vla.processor.tokenize("open the drawer") + [tiny_vla.config.empty_token_id]
    actions = tok.encode(np.linspace(-0.9, 0.9, 7)).tolist()
    ids = torch.tensor([prompt + actions + [2]])
    labels = ids.clone()
    labels[:, : len(prompt)] = -100
    pixels = torch.randn(1, 6, 224, 224)
    out = tiny_vla(input_ids=ids, pixel_values=pixels, labels=labels)
    n = tiny_vla.config.num_patches
    assert out.logits.shape == (1, ids.shape[1] + n, tiny_vla.config.llm["vocab_size"])
    preds = out.logits[0, n + len(prompt) - 1: n + len(prompt) + 6].argmax(-1)
    expected_acc = (preds == torch.tensor(actions)).float().mean()
    assert out.action_accuracy.item() == pytest.approx(expected_acc.item())
    assert out.loss.item() > 0 and out.action_l1.item() >= 0


def test_image_and_language_both_change_actions_after_fitting():
    """Overfit two (image, instruction) -> action pairs: each input must steer the output."""
    torch.manual_seed(0)
    vla = VLA.create(get_preset("tiny"), ["open the drawer", "push the button"], seed=0)
    tok = vla.action_tokenizer
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    samples = [(imgs[0], "open the drawer", np.full(7, -0.5)), (imgs[0], "push the button", np.full(7, 0.5)),
               (imgs[1], "open the drawer", np.full(7, 0.9))]
    rows, pix = [], []
    for img, text, act in samples:
        rows.append(vla.processor.tokenize(text) + [vla.config.empty_token_id] + tok.encode(act).tolist() + [2])
        pix.append(vla.processor.preprocess_image(img))
    width = max(map(len, rows))
    pad = vla.config.llm["pad_token_id"]
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = (ids != pad).long()
    labels = ids.clone()
    for i, r in enumerate(rows):
        labels[i, : len(r) - 8] = -100
    labels[mask == 0] = -100
    opt = torch.optim.AdamW(vla.parameters(), lr=3e-3)
    for _ in range(60):
        loss = vla(input_ids=ids, pixel_values=torch.stack(pix), attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    vla.eval()
    out = vla.predict_action(image=[s[0] for s in samples], instruction=[s[1] for s in samples])
    np.testing.assert_allclose(out, np.stack([s[2] for s in samples]), atol=0.02)


def test_cli_predict_prints_the_action(tiny_vla, tmp_path, capsys):
    from PIL import Image

    tiny_vla.save_pretrained(tmp_path / "ck")
    Image.fromarray(np.full((50, 70, 3), 120, np.uint8)).save(tmp_path / "img.png")
    assert main(["predict", "--checkpoint", str(tmp_path / "ck"), "--image", str(tmp_path / "img.png"),
                 "--instruction", "open the drawer"]) == 0
    printed = capsys.readouterr().out
    expected = tiny_vla.predict_action(image=np.asarray(Image.open(tmp_path / "img.png")),
                                       instruction="open the drawer")
    values = np.array([float(x) for x in printed.strip().strip("[]").split(",")])
    np.testing.assert_allclose(values, expected, atol=1e-5)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["predict", "--checkpoint", str(tmp_path / "missing"), "--image", "x.png",
                 "--instruction", "a"]) == 2
    assert "error" in capsys.readouterr().err
