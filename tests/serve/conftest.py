"""Real servers for the serving tests: uvicorn on a free loopback port, in a background thread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from serve_testutils import NORM_STATS, ServerThread

from openvla import VLA, get_preset
from openvla.serve.server import ServeSettings, create_app


@pytest.fixture(scope="session")
def served_checkpoint(tmp_path_factory) -> Path:
    """A tiny VLA with two datasets' statistics, saved. Its projector and attention are sharpened so actions
    follow the image (a random tiny model answers nearly the same for every input, which hides mix-ups)."""
    vla = VLA.create(get_preset("tiny"), ["open the drawer", "push the button"], seed=0)
    with torch.no_grad():
        for p in vla.projector.parameters():
            p.mul_(10.0)
        for name, p in vla.language_model.named_parameters():
            if "q_proj" in name or "k_proj" in name:
                p.mul_(20.0)
    vla.config.norm_stats = NORM_STATS
    path = tmp_path_factory.mktemp("serve") / "tiny"
    vla.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def local_vla(served_checkpoint: Path) -> VLA:
    """The served checkpoint loaded in process: the ground truth for every answer."""
    return VLA.from_pretrained(served_checkpoint).eval()


@pytest.fixture(scope="session")
def vla_server(served_checkpoint: Path):
    """The tiny checkpoint served with a 1 MiB body limit (so 413 is cheap to provoke)."""
    settings = ServeSettings(max_batch_size=8, batch_window_ms=5, max_body_mb=1.0)
    with ServerThread(create_app(served_checkpoint, settings)) as server:
        server.wait_ready()
        yield server


@pytest.fixture
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(8)]
