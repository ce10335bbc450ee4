"""Each mode trains only what it should; the tiny preset fits a fixed batch; LoRA merges exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openvla import VLA, get_preset
from openvla.model.decoding import supports_static_decoding
from openvla.train.batching import Collator, sample_builder
from openvla.train.config import TrainConfig
from openvla.train.merge import merge_adapter
from openvla.train.modes import apply_mode, count_parameters, lora_targets, unused_module_prefixes
from openvla.train.trainer import make_optimizer

TASKS = ["open the drawer", "push the button", "pick up the block"]


def _model(seed: int = 0) -> VLA:
    return VLA.create(get_preset("tiny"), TASKS, seed=seed)


def _batch(vla: VLA, n: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    builder = sample_builder(vla.processor)
    frames = [{"images": {"image": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)},
               "actions": rng.uniform(-1, 1, (1, 7)).astype(np.float32), "instruction": TASKS[i % 3]}
              for i in range(n)]
    return Collator(vla.tokenizer.pad_token_id)([builder(f) for f in frames])


def _trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_modes_train_only_their_parts():
    counts = {}
    for mode in ("full", "frozen-vision", "last-layer", "sandwich"):
        model = apply_mode(_model(), mode)
        names = _trainable_names(model)
        counts[mode] = count_parameters(model)[0]
        vision = {n for n in names if n.startswith("vision_backbone.")}
        if mode == "full":  # everything but what the loss cannot reach
            unused = tuple(unused_module_prefixes(model))
            frozen = {n for n, _ in model.named_parameters() if n.startswith(unused)}
            assert frozen and not names & frozen
            assert names | frozen == {n for n, _ in model.named_parameters()}
        if mode == "frozen-vision":
            assert not vision and any(n.startswith("projector.") for n in names)
        if mode == "last-layer":
            assert names == {"language_model.model.embed_tokens.weight", "language_model.lm_head.weight"} | {
                n for n, _ in model.named_parameters() if n.startswith("language_model.model.layers.1.")}
        if mode == "sandwich":
            assert vision and any(n.startswith("projector.") for n in names)
            assert not any(n.startswith("language_model.model.layers.0.") for n in names)
    assert counts["last-layer"] < counts["sandwich"] < counts["full"]
    assert counts["frozen-vision"] < counts["full"]
    full = apply_mode(_model(), "full")
    vision_trainable = sum(p.numel() for p in full.vision_backbone.parameters() if p.requires_grad)
    assert counts["full"] - counts["frozen-vision"] == vision_trainable


@pytest.mark.parametrize("mode", ["lora", "frozen-vision", "last-layer", "sandwich"])
def test_oft_modules_train_in_every_mode(mode):
    cfg = get_preset("tiny")
    cfg.action_chunk, cfg.parallel_decoding, cfg.action_head = 2, True, "l1"
    cfg.proprio_dim, cfg.action_queries, cfg.film = 3, "learned", True
    names = _trainable_names(apply_mode(VLA.create(cfg, TASKS, seed=0), mode))
    for module in ("action_head.", "proprio_projector.", "action_queries", "film."):
        trained = [n for n in names if module in n]
        assert trained and not any("lora_" in n for n in trained), (mode, module)  # in full, not adapted


def test_lora_wraps_every_used_linear_and_nothing_else():
    vla = _model()
    targets = lora_targets(vla)
    assert "language_model.lm_head" in targets and "projector.fc1" in targets
    assert not any(".encoder.layer.3." in t for t in targets)  # the unused last DINOv2 block
    model = apply_mode(vla, "lora")
    names = _trainable_names(model)
    assert names and all("lora_" in n for n in names)
    per_target = {n.split(".lora_")[0] for n in names}
    assert len(per_target) == len(targets)


def test_fixed_batch_loss_falls_and_accuracy_rises():
    torch.manual_seed(0)
    vla = _model()
    batch = _batch(vla)
    optimizer, scheduler = make_optimizer(vla, TrainConfig(lr=2e-3, max_steps=40))
    first = vla(**{k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "labels")})
    for _ in range(40):
        out = vla(**{k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "labels")})
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        scheduler.step()
    assert out.loss.item() < 0.3 * first.loss.item()
    assert out.action_accuracy.item() > first.action_accuracy.item() + 0.5


def test_lora_merge_equals_base_plus_adapter(tmp_path):
    base = _model()
    base.config.norm_stats = {"toy": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7}}}
    base.save_pretrained(tmp_path / "base")
    model = apply_mode(VLA.from_pretrained(tmp_path / "base"), "lora")
    batch = _batch(model.get_base_model())
    optimizer, _ = make_optimizer(model, TrainConfig(lr=1e-2))
    for _ in range(3):  # move the adapters off their zero init
        out = model(**{k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "labels")})
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                         attention_mask=batch["attention_mask"]).logits
    model.save_pretrained(str(tmp_path / "adapter"), save_embedding_layers=False)
    merged = VLA.from_pretrained(merge_adapter(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged"))
    with torch.no_grad():
        got = merged(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                     attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # the fast decoding path calls the LoRA-wrapped projections: the adapter's actions are the merged model's
    wrapped = model.get_base_model()
    assert supports_static_decoding(wrapped.language_model)
    ids, mask = wrapped.pack_prompts([wrapped.processor.tokenize(t) for t in TASKS])
    pixels = batch["pixel_values"][:len(TASKS)]
    lora_ids = wrapped.generate_action_ids(ids, pixels, mask, 7)
    assert torch.equal(lora_ids, merged.generate_action_ids(ids, pixels, mask, 7))
    base_ids = VLA.from_pretrained(tmp_path / "base").generate_action_ids(ids, pixels, mask, 7)
    assert not torch.equal(lora_ids, base_ids)  # the adapters change the actions, so the check above has teeth
    assert not torch.allclose(got, VLA.from_pretrained(tmp_path / "base")(
        input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
        attention_mask=batch["attention_mask"]).logits, atol=1e-3)


def test_unknown_mode_and_config_keys_are_clear():
    with pytest.raises(ValueError, match="valid modes"):
        apply_mode(_model(), "everything")
    with pytest.raises(ValueError, match=r"unknown training config keys \['lrr'\]"):
        TrainConfig().with_overrides(["lrr=1"])


def test_lora_on_the_7b_preset_counts_its_trainable_parameters():
    """Reference (PEFT 0.11 "all-linear"): 110,828,288. Ours wraps only layers the loss reaches and the ViTs'
    separate q/k/v (see docs/train.md for the arithmetic): 112,443,392."""
    with torch.device("meta"):
        model = apply_mode(VLA(get_preset("openvla-7b")), "lora")
    trainable, total = count_parameters(model)
    assert trainable == 112_443_392
    by_part = {"llm": 0, "lm_head": 0, "projector": 0, "dino": 0, "siglip": 0}
    for name, p in model.named_parameters():
        if p.requires_grad:
            part = ("lm_head" if "lm_head" in name else "projector" if "projector" in name
                    else "siglip" if "fused_featurizer" in name else "dino" if "featurizer" in name else "llm")
            by_part[part] += p.numel()
    assert by_part == {"llm": 79_953_920, "lm_head": 1_157_120, "projector": 1_019_904,
                       "dino": 23 * 589_824, "siglip": 26 * 644_096}
