"""A VLA behind the ``Policy`` protocol, so evaluation and serving never care where actions come from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from openvla.policy import Observation


def load_for_inference(path: str | Path, device: str | torch.device | None = None, compile: bool = False,
                       quantize: str | None = None, **kw: Any) -> Any:
    """A VLA from a checkpoint, eval mode; ``quantize`` is int8, bnb8 or bnb4 (``model/quantize.py``),
    ``compile`` runs inference through torch.compile (``VLA.compile_inference``)."""
    from openvla.model.quantize import quantize as apply_quantization
    from openvla.model.vla import VLA

    vla = VLA.from_pretrained(path, device=device, **kw).eval()
    if quantize:
        apply_quantization(vla, quantize)
    return vla.compile_inference() if compile else vla


class VLAPolicy:
    """Wraps a VLA: observation dict -> action chunk [T, D] in robot units."""

    def __init__(self, vla: Any, unnorm_key: str | None = None) -> None:
        self.vla = vla.eval()
        self.unnorm_key = vla.resolve_unnorm_key(unnorm_key)

    @classmethod
    def from_pretrained(cls, path: str | Path, unnorm_key: str | None = None,
                        device: str | torch.device | None = None, compile: bool = False,
                        quantize: str | None = None, **kw: Any) -> VLAPolicy:
        """Load a checkpoint for inference (see ``load_for_inference``)."""
        return cls(load_for_inference(path, device=device, compile=compile, quantize=quantize, **kw), unnorm_key)

    def reset(self) -> None:
        pass

    def act(self, observation: Observation) -> np.ndarray:
        return self.act_batch([observation])[0]

    def act_batch(self, observations: list[Observation]) -> list[np.ndarray]:
        """One batched forward pass for several observations (several envs, several robots)."""
        chunks = self.vla.predict_observations(list(observations), self.unnorm_key)
        return [np.asarray(c, dtype=np.float32) for c in chunks]
