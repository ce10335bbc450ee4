"""Serving a policy over HTTP: `openvla serve` (server.py) and `Client` (the Policy protocol over HTTP).

Names are imported on first use, so `import openvla.serve` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Client", "ServerError", "ServeSettings", "create_app", "run"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "ServerError"):
        from openvla.serve import client

        return getattr(client, name)
    if name in ("ServeSettings", "create_app", "run"):
        from openvla.serve import server

        return getattr(server, name)
    raise AttributeError(f"module 'openvla.serve' has no attribute {name!r}")
