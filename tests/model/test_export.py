"""Writing checkpoints: a full disk says so and leaves nothing partial; the released layout opens the way
OpenVLA users open it (preprocessor config, a tokenizer file the reference's tokenizers reads, the true dtype,
the remote-code files)."""

from __future__ import annotations

import copy
import errno
import json
import re
import shutil

import pytest
import torch

from openvla import VLA
from openvla.checkpoint import CheckpointError, export_openvla, native
from openvla.checkpoint.reference_files import REMOTE_CODE
from openvla.checkpoint.space import DiskFullError


def test_saving_on_a_full_disk_says_so_and_leaves_no_partial_file(tiny_vla, tmp_path, monkeypatch):
    def full(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"x" * 598)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(native, "save_file", full)
    with pytest.raises(DiskFullError, match=r"no space left on .* while writing .*model\.safetensors: need ~\d"):
        tiny_vla.save_pretrained(tmp_path / "ck")
    assert list((tmp_path / "ck").iterdir()) == []


def test_export_writes_what_the_reference_loader_reads(tiny_vla, tmp_path):
    import tokenizers

    out = tmp_path / "export"
    with pytest.warns(UserWarning) as caught:
        export_openvla(tiny_vla, out)
    said = [str(w.message) for w in caught]
    assert any(re.search(r"has no configuration_prismatic.py, modeling_prismatic.py, processing_prismatic.py.*"
                         r"huggingface-cli download openvla/openvla-7b --include '\*.py'", m) for m in said)
    # a tokenizer of its own: the reference's predict_action would append Llama-2's token 29871
    assert any("empty token is 3, not Llama-2's 29871" in m for m in said)
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["image_processor_type"] == "PrismaticImageProcessor" and pre["image_resize_strategy"] == "resize-naive"
    assert pre["input_sizes"] == [[3, 224, 224], [3, 224, 224]] and pre["use_fused_vision_backbone"] is True
    assert pre["tvf_resize_params"][0]["size"] == [224, 224] and pre["tvf_do_letterbox"] is False
    assert pre["auto_map"]["AutoProcessor"] == "processing_prismatic.PrismaticProcessor"
    hf = json.loads((out / "config.json").read_text())
    assert hf["torch_dtype"] == "float32"
    # tokenizers < 0.20 (the reference pins 0.19.1) reads BPE merges only as "a b" strings
    merges = json.loads((out / "tokenizer.json").read_text())["model"]["merges"]
    assert merges and all(isinstance(m, str) and len(m.split(" ")) == 2 for m in merges)
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and "backend" not in tok_cfg
    assert tok_cfg["model_input_names"] == ["input_ids", "attention_mask"]  # no token_type_ids for generate()
    prompt = "In: What action should the robot take to open the drawer?\nOut:"
    ids = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json")).encode(prompt).ids
    assert ids == tiny_vla.tokenizer(prompt).input_ids


def test_letterbox_preprocessor_config_is_the_reference_processors_own(fixtures_dir, tmp_path):
    source = fixtures_dir / "openvla-tiny-letterbox"
    with pytest.warns(UserWarning, match="has no configuration_prismatic.py"):
        export_openvla(VLA.from_pretrained(source), tmp_path / "export")
    ours = json.loads((tmp_path / "export" / "preprocessor_config.json").read_text())
    assert ours.pop("auto_map") and ours.pop("processor_class") == "PrismaticProcessor"
    assert ours == json.loads((source / "preprocessor_config.json").read_text())


def test_a_bf16_model_is_labelled_bfloat16(tiny_vla, tmp_path):
    half = copy.deepcopy(tiny_vla).to(torch.bfloat16)
    with pytest.warns(UserWarning):
        export_openvla(half, tmp_path / "export")
    assert json.loads((tmp_path / "export" / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_remote_code_is_carried_over_from_the_checkpoint_loaded(tiny_reference_dir, tmp_path, recwarn):
    released = tmp_path / "released"
    shutil.copytree(tiny_reference_dir, released)
    for name in REMOTE_CODE:
        (released / name).write_text(f"# {name}\n")
    vla = VLA.from_pretrained(released)
    export_openvla(vla, tmp_path / "export")
    vla.save_pretrained(tmp_path / "native")  # e.g. a fine-tune's final model, exported later
    export_openvla(VLA.from_pretrained(tmp_path / "native"), tmp_path / "export2")
    for name in REMOTE_CODE:
        assert (tmp_path / "export" / name).read_text() == f"# {name}\n"
        assert (tmp_path / "export2" / name).read_text() == f"# {name}\n"
    assert not [w for w in recwarn if "prismatic.py" in str(w.message)]


@pytest.mark.parametrize("backbone_id, said", [
    (None, "config.json has no vision_backbone_id"),
    ("siglip-vit-so400m", "vision_backbone_id 'siglip-vit-so400m' means SigLIP"),
    ("dinov2-vit-l", "vision_backbone_id 'dinov2-vit-l' means DINOv2"),
])
def test_a_wrong_or_missing_vision_backbone_id_names_the_field(tiny_reference_dir, tmp_path, backbone_id, said):
    ck = tmp_path / "ck"
    shutil.copytree(tiny_reference_dir, ck)
    hf = json.loads((ck / "config.json").read_text())
    hf.pop("vision_backbone_id")
    if backbone_id is not None:
        hf["vision_backbone_id"] = backbone_id
    (ck / "config.json").write_text(json.dumps(hf))
    with pytest.raises(CheckpointError) as err:
        VLA.from_pretrained(ck)
    assert said in str(err.value)
    assert ("the weights hold DINOv2 (featurizer) + SigLIP (fused_featurizer): set \"vision_backbone_id\": "
            "\"dinosiglip-vit-so-224px\" in config.json") in str(err.value)
    assert "unexpected" not in str(err.value)
