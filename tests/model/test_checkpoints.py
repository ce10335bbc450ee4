"""Save/load in our format and export to the released layout give identical outputs; bad checkpoints say why."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from openvla import VLA
from openvla.checkpoint import CheckpointError, export_openvla


def _outputs(vla, pixels, ids):
    with torch.no_grad():
        return vla(input_ids=ids, pixel_values=pixels).logits


def test_reference_load_export_load_is_identical(tiny_reference_dir, tmp_path):
    vla = VLA.from_pretrained(tiny_reference_dir)
    export_openvla(vla, tmp_path / "exported")
    again = VLA.from_pretrained(tmp_path / "exported")
    pixels, ids = torch.randn(2, 6, 224, 224), torch.tensor([[1, 5, 6, 7], [1, 8, 9, 10]])
    torch.testing.assert_close(_outputs(vla, pixels, ids), _outputs(again, pixels, ids), atol=0, rtol=0)
    original = load_file(str(tiny_reference_dir / "model.safetensors"))
    exported = load_file(str(tmp_path / "exported" / "model.safetensors"))
    assert set(original) == set(exported)
    for k in original:
        torch.testing.assert_close(original[k], exported[k], atol=0, rtol=0, msg=k)


def test_model_trained_here_exports_and_reloads(tiny_vla, tmp_path):
    tiny_vla.config.norm_stats = {"toy": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 7}}}
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    expected = tiny_vla.predict_action(image=image, instruction="open the drawer")
    for save in (tiny_vla.save_pretrained, lambda p: export_openvla(tiny_vla, p)):
        path = tmp_path / f"ck{id(save)}"
        save(path)
        loaded = VLA.from_pretrained(path)
        np.testing.assert_array_equal(loaded.predict_action(image=image, instruction="open the drawer"), expected)
        assert loaded.tokenizer is not None


def test_dataset_statistics_file_overrides_config(tiny_reference_dir, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(tiny_reference_dir, ck)
    (ck / "dataset_statistics.json").write_text(json.dumps({"a": {"action": {"q01": [0] * 7, "q99": [1] * 7}},
                                                             "b": {"action": {"q01": [0] * 7, "q99": [2] * 7}}}))
    vla = VLA.from_pretrained(ck)
    with pytest.raises(ValueError, match=r"pass unnorm_key, one of \['a', 'b'\]"):
        vla.predict_action(pixel_values=torch.zeros(1, 6, 224, 224), input_ids=torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match=r"unknown unnorm_key 'c'; valid keys: \['a', 'b'\]"):
        vla.predict_action(pixel_values=torch.zeros(1, 6, 224, 224), input_ids=torch.tensor([[1, 2, 3]]),
                           unnorm_key="c")


def test_missing_directory_and_non_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        VLA.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        VLA.from_pretrained(tmp_path)


def test_hub_id_offline_says_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="huggingface-cli download openvla/openvla-7b"):
        VLA.from_pretrained("openvla/openvla-7b")


def test_partial_checkpoint_names_missing_and_unexpected_keys(tiny_reference_dir, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(tiny_reference_dir, ck)
    state = load_file(str(ck / "model.safetensors"))
    del state["projector.fc2.weight"]
    state["projector.fc9.weight"] = torch.zeros(2)
    save_file(state, str(ck / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        VLA.from_pretrained(ck)
    assert "projector.fc2.weight" in str(err.value) and "projector.fc9.weight" in str(err.value)


def test_truncated_weights_and_missing_shards(tiny_reference_dir, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(tiny_reference_dir, ck)
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read"):
        VLA.from_pretrained(ck)
    (ck / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        VLA.from_pretrained(ck)
    (ck / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(CheckpointError, match="shards .* missing"):
        VLA.from_pretrained(ck)


def test_sharded_checkpoint_loads(tiny_reference_dir, tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    for f in ("config.json", "dataset_statistics.json"):
        if (tiny_reference_dir / f).exists():
            shutil.copy(tiny_reference_dir / f, ck / f)
    state = load_file(str(tiny_reference_dir / "model.safetensors"))
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for name, ks in halves.items():
        save_file({k: state[k] for k in ks}, str(ck / name))
        weight_map.update({k: name for k in ks})
    (ck / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    a = VLA.from_pretrained(ck)
    b = VLA.from_pretrained(tiny_reference_dir)
    pixels, ids = torch.randn(1, 6, 224, 224), torch.tensor([[1, 5, 6]])
    torch.testing.assert_close(_outputs(a, pixels, ids), _outputs(b, pixels, ids), atol=0, rtol=0)


def test_oft_models_refuse_the_released_layout(tiny_vla, tmp_path, monkeypatch):
    monkeypatch.setattr(tiny_vla.config, "action_chunk", 4)  # the fixture is shared: undone after the test
    with pytest.raises(ValueError, match=r"sets \['action_chunk'\].*save_pretrained"):
        export_openvla(tiny_vla, tmp_path / "exported")
    assert not (tmp_path / "exported" / "model.safetensors").exists()
