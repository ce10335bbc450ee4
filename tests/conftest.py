"""Shared test set-up: the fixtures beside the checkout, and a loud failure if torchvision is installed."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if importlib.util.find_spec("torchvision") is not None:
    raise RuntimeError("torchvision is installed: PyPI's build breaks transformers on a CPU-only torch. "
                       "Uninstall it (`.venv/bin/pip uninstall -y torchvision`) and find what pulled it in.")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
TINY_REFERENCE = FIXTURES / "openvla-tiny-reference"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    assert FIXTURES.is_dir(), f"the shared fixtures must be beside the checkout at {FIXTURES}"
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_reference_dir() -> Path:
    assert TINY_REFERENCE.is_dir(), f"missing {TINY_REFERENCE}"
    return TINY_REFERENCE


@pytest.fixture(scope="session")
def tiny_vla():
    """A randomly initialised tiny preset model with its own tokenizer (seeded)."""
    from openvla import VLA, get_preset

    return VLA.create(get_preset("tiny"), ["open the drawer", "push the button"], seed=0)
