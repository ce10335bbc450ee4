"""openvla: OpenVLA-exact Vision-Language-Action models, training, data, simulation and serving.

Names are imported on first use, so `import openvla.data` (or a simulator worker process) does not pay
for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {
    "VLA": "openvla.model.vla",
    "VLAConfig": "openvla.config",
    "PRESETS": "openvla.config",
    "get_preset": "openvla.config",
    "Policy": "openvla.policy",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'openvla' has no attribute {name!r}")
