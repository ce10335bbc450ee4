"""Data tests: statistics of read-only datasets go to a temporary cache, never to the user's home."""

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Statistics of read-only datasets go to a temporary cache, never to the user's home."""
    monkeypatch.setenv("OPENVLA_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))

