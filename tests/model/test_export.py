"""Writing checkpoints: a full disk says so and leaves nothing partial; the released layout opens the way
OpenVLA users open it (preprocessor config, a tokenizer file the reference's tokenizers reads, the true dtype,
the remote-code files)."""

from __future__ import annotations

import errno

import pytest

from openvla.checkpoint import native
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
