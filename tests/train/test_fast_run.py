"""FAST through the CLI and the trainer: `openvla fast-tokenizer` writes a tokenizer the model takes from a file,
`openvla train` fits one itself when the model has none, saves it in the checkpoint, and resumes with it."""

from __future__ import annotations

import json

import numpy as np

from openvla import VLA
from openvla.cli import main
from openvla.model.fast_tokenizer import FastTokenizer
from openvla.train.config import TrainConfig
from openvla.train.trainer import train

BASE = {"preset": "tiny", "batch_size": 4, "num_workers": 0, "log_every": 1, "lr": 1e-3, "seed": 3}


def test_fast_tokenizer_command_writes_a_tokenizer_and_reports_it(toy_dataset, tmp_path, capsys):
    out = tmp_path / "fast.json"
    assert main(["fast-tokenizer", "--data", str(toy_dataset), "--out", str(out), "--chunk", "2",
                 "--vocab-size", "128"]) == 0
    printed = capsys.readouterr().out
    stats = json.loads(printed.splitlines()[1])
    assert stats["chunks"] == 72 and stats["binned_tokens_per_chunk"] == 8
    assert stats["compression"] > 1 and "round-trip error" in printed
    codec = FastTokenizer.load(str(out))
    assert (codec.chunk, codec.dim, codec.vocab_size) == (2, 4, 128)


def test_train_fits_saves_and_resumes_with_the_fast_tokenizer(toy_dataset, tmp_path):
    run = tmp_path / "run"
    model = {"action_head": "fast", "action_chunk": 2}
    cfg = {**BASE, "data": [str(toy_dataset)], "out": str(run), "model": model, "save_every": 2}
    train(TrainConfig.from_dict({**cfg, "max_steps": 2}))
    saved = json.loads((run / "vla_config.json").read_text())["fast_tokenizer"]
    assert saved["bpe"] and saved["chunk"] == 2
    final = train(TrainConfig.from_dict({**cfg, "max_steps": 3}))  # resuming refits the same tokenizer
    vla = VLA.from_pretrained(final)
    assert vla.config.fast_tokenizer == saved
    action = vla.predict_action(image=np.zeros((32, 32, 3), np.uint8), instruction="move to the red square")
    assert action.shape == (2, 4) and np.isfinite(action).all()


def test_a_tokenizer_file_is_kept_inline_in_the_checkpoint(toy_dataset, tmp_path):
    path = tmp_path / "fast.json"
    assert main(["fast-tokenizer", "--data", str(toy_dataset), "--out", str(path), "--chunk", "2",
                 "--vocab-size", "64", "--scale", "8"]) == 0
    model = {"action_head": "fast", "action_chunk": 2, "fast_tokenizer": str(path)}
    final = train(TrainConfig.from_dict({**BASE, "data": [str(toy_dataset)], "out": str(tmp_path / "run"),
                                         "model": model, "max_steps": 1}))
    path.unlink()  # the checkpoint no longer needs the file
    codec = VLA.from_pretrained(final).action_head.codec
    assert (codec.scale, codec.vocab_size) == (8, 64)
