"""The paths openvla-7b takes, on tiny models: a bf16 or 4-bit base stays so through `openvla train` (only the
adapters and their optimiser state are float32), and `openvla merge` streams shard by shard, equals peft's
merge_and_unload, keeps shard count and dtype, and carries the fine-tuning run's statistics."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from openvla import VLA
from openvla.checkpoint.stream import read_entries, shard_files
from openvla.cli import main
from openvla.train import trainer
from openvla.train.config import TrainConfig
from openvla.train.merge import merge_adapter, save_adapter
from openvla.train.modes import LoraSettings, apply_mode

FAST = {"batch_size": 2, "num_workers": 0, "log_every": 1, "lr": 1e-3, "seed": 3, "save_every": 100}
BASE_STATS = {"base_robot": {"action": {"q01": [-2.0] * 4, "q99": [2.0] * 4, "mask": [True] * 4}}}


@pytest.fixture(scope="module")
def bf16_base(toy_dataset, tmp_path_factory) -> Path:
    """A tiny model for the toy data's 4-D actions, saved in bf16 with another dataset's statistics."""
    root = tmp_path_factory.mktemp("bf16")
    final = trainer.train(TrainConfig.from_dict({**FAST, "preset": "tiny", "data": [str(toy_dataset)],
                                                 "out": str(root / "run"), "max_steps": 1}))
    vla = VLA.from_pretrained(final).to(torch.bfloat16)
    vla.config.norm_stats = BASE_STATS
    vla.config.default_unnorm_key = None
    return vla.save_pretrained(root / "base")


def _spy_optimizer(monkeypatch) -> list:
    """Record the model and optimiser `openvla train` builds."""
    seen = []
    original = trainer.make_optimizer

    def spy(model, cfg):
        out = original(model, cfg)
        seen.append((model, out[0]))
        return out

    monkeypatch.setattr(trainer, "make_optimizer", spy)
    return seen


def _train(base: Path, data: Path, out: Path, *extra: str) -> int:
    sets = [f"{k}={v}" for k, v in FAST.items()] + ["mode=lora", "lora_rank=4", "max_steps=2", *extra]
    return main(["train", "--checkpoint", str(base), "--data", str(data), "--out", str(out), "--set", *sets])


def _dtypes(directory: Path) -> set[torch.dtype]:
    return {e.dtype for f in shard_files(directory) for e in read_entries(f) if e.dtype.is_floating_point}


def test_lora_on_a_bf16_base_keeps_it_bf16_and_merges_with_the_run_statistics(bf16_base, toy_dataset, tmp_path,
                                                                                monkeypatch):
    seen = _spy_optimizer(monkeypatch)
    assert _train(bf16_base, toy_dataset, tmp_path / "run") == 0
    model, optimizer = seen[0]
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trainable == {torch.float32}  # the base was never copied to float32
    states = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.ndim]
    assert states and {t.dtype for t in states} == {torch.float32}
    adapter = tmp_path / "run" / "adapter"
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}
    assert all(t.abs().sum() > 0 for k, t in weights.items() if "lora_B" in k)  # every adapter learned (B starts at 0)

    # the end-of-run merge and `openvla merge`: bf16 out, the run's dataset added and chosen by default
    monkeypatch.setattr(VLA, "from_pretrained", _no_model_loads)
    assert main(["merge", "--base", str(bf16_base), "--adapter", str(adapter), "--out", str(tmp_path / "m")]) == 0
    monkeypatch.undo()
    for merged_dir in (tmp_path / "run" / "final", tmp_path / "m"):
        assert _dtypes(merged_dir) == {torch.bfloat16}
        merged = VLA.from_pretrained(merged_dir)
        assert set(merged.norm_stats) == {"base_robot", "toy"}
        assert merged.resolve_unnorm_key(None) == "toy"
    run_model = model.get_base_model()
    toy = run_model.norm_stats["toy"]
    assert json.loads((tmp_path / "m" / "dataset_statistics.json").read_text())["toy"] == toy
    action = merged.predict_action(image=np.zeros((32, 32, 3), np.uint8), instruction="move to the red square")
    assert action.shape == (4,)


def _no_model_loads(*args, **kwargs):
    raise AssertionError("the merge must stream the base's files, not load it as a model")


def test_qlora_trains_adapters_on_a_4bit_base(bf16_base, toy_dataset, tmp_path, monkeypatch):
    pytest.importorskip("bitsandbytes")
    seen = _spy_optimizer(monkeypatch)
    assert _train(bf16_base, toy_dataset, tmp_path / "run", "quantize_base=bnb4") == 0
    model, _ = seen[0]
    up = model.get_base_model().language_model.model.layers[0].mlp.up_proj
    assert type(up.base_layer).__name__ == "Linear4bit"
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert _dtypes(tmp_path / "run" / "final") == {torch.bfloat16}  # merged into the bf16 base, not the 4-bit one
    with pytest.raises(ValueError, match="needs mode=lora"):
        trainer.load_base(TrainConfig(checkpoint=str(bf16_base), mode="full", quantize_base="bnb4"))


def _adapted(base_dir: Path, tmp_path: Path):
    """The base with LoRA adapters moved off their zero init, saved as a run would save them."""
    model = apply_mode(VLA.from_pretrained(base_dir), "lora", LoraSettings(rank=4, alpha=8))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model, save_adapter(model, tmp_path / "adapter")


@pytest.mark.parametrize("layout", ["openvla", "native"])
def test_streaming_merge_equals_peft_merge_and_unload(fixtures_dir, tmp_path, layout):
    base_dir = fixtures_dir / "openvla-tiny-letterbox"  # released layout, 5 float32 shards
    model, adapter = _adapted(base_dir, tmp_path)
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    out = merge_adapter(base_dir, adapter, tmp_path / "merged", layout=layout)
    got = VLA.from_pretrained(out).state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, atol=1e-6, rtol=0, msg=key)
    assert len(shard_files(out)) == len(shard_files(base_dir)) == 5
    assert _dtypes(out) == {torch.float32}
    if layout == "openvla":
        assert json.loads((out / "config.json").read_text())["torch_dtype"] == "float32"
        assert [f.name for f in shard_files(out)] == [f.name for f in shard_files(base_dir)]


def test_merge_of_a_bf16_released_checkpoint_stays_bf16_and_sharded(fixtures_dir, tmp_path):
    src = fixtures_dir / "openvla-tiny-letterbox"
    base_dir = tmp_path / "bf16"
    base_dir.mkdir()
    for f in src.iterdir():
        if f.suffix == ".safetensors" and f.name.startswith("model"):
            save_file({k: v.to(torch.bfloat16) for k, v in load_file(str(f)).items()}, str(base_dir / f.name))
        elif f.suffix == ".json":
            shutil.copyfile(f, base_dir / f.name)
    model, adapter = _adapted(base_dir, tmp_path)
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    out = merge_adapter(base_dir, adapter, tmp_path / "merged")
    assert len(shard_files(out)) == 5 and _dtypes(out) == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    got = VLA.from_pretrained(out).state_dict()
    for key, value in expected.items():  # peft rounds base + delta in bf16 twice, the stream once
        torch.testing.assert_close(got[key].float(), value.float(), atol=2e-2, rtol=1e-2, msg=key)


def test_merge_refuses_an_adapter_for_another_base(fixtures_dir, tiny_reference_dir, tmp_path):
    _, adapter = _adapted(fixtures_dir / "openvla-tiny-letterbox", tmp_path)
    with pytest.raises(ValueError, match="does not fit the base"):
        merge_adapter(tiny_reference_dir, adapter, tmp_path / "merged")


def test_merging_a_base_in_our_layout_into_the_released_one_writes_the_reference_processor(fixtures_dir, tmp_path):
    """A model saved in our layout has no preprocessor_config.json; the released layout needs one."""
    from openvla.checkpoint.reference_files import PREPROCESSOR_FILE, preprocessor_config_for

    base_dir = VLA.from_pretrained(fixtures_dir / "openvla-tiny-letterbox").save_pretrained(tmp_path / "ours")
    assert not (base_dir / PREPROCESSOR_FILE).exists()
    _, adapter = _adapted(base_dir, tmp_path)
    out = merge_adapter(base_dir, adapter, tmp_path / "merged", layout="openvla")
    merged = VLA.from_pretrained(out)
    assert json.loads((out / PREPROCESSOR_FILE).read_text()) == json.loads(
        json.dumps(preprocessor_config_for(merged.config)))
    assert json.loads((out / PREPROCESSOR_FILE).read_text())["image_resize_strategy"] == "letterbox"
