"""The robot side needs numpy, msgpack and httpx only: `Client` works with torch, transformers and the server's
packages absent (a robot computer installs the `client` extra's packages, see docs/serve.md)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from serve_testutils import EchoPolicy, ServerThread

from openvla.serve.server import create_app

ROOT = Path(__file__).resolve().parents[2]
ABSENT = ["torch", "transformers", "tokenizers", "safetensors", "PIL", "cv2", "fastapi", "starlette", "uvicorn",
          "json_numpy", "pydantic"]
ROBOT = """
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):  # as on a robot computer: these packages are not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, Absent())
import numpy as np
from openvla.serve import Client

with Client(URL) as client:
    client.wait_until_ready(30)
    chunk = client.act({"image": np.full((4, 4, 3), 9, np.uint8), "instruction": "abc"})
print(chunk.tolist())
print(sorted(m for m in sys.modules if m.split(".")[0] in ABSENT))
"""


def test_client_extra_lists_only_what_the_client_imports():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = sorted(spec.split(">")[0].split("=")[0].split("[")[0] for spec in extras["client"])
    assert names == ["httpx", "msgpack", "numpy"]


def test_client_works_without_torch_transformers_or_the_server():
    with ServerThread(create_app(EchoPolicy())) as server:
        server.wait_ready()
        code = f"ABSENT = {ABSENT!r}\nURL = {server.url!r}\n" + ROBOT
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                              timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    action, loaded = proc.stdout.strip().splitlines()
    assert action == "[[9.0, 9.0, 9.0, 3.0]]" and loaded == "[]"
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert {"numpy", "msgpack", "httpx"} <= imported and not imported & set(ABSENT)
