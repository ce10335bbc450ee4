"""Action heads: how a VLA turns the LM's states into actions. Each head is one file and one line here.

A head owns its slot layout (what sits in the action positions), its training targets, its loss and metrics,
its sampling loop, and which of its modules are new (trained in every fine-tuning mode) or unused.
"""

from __future__ import annotations

from openvla.model.heads.base import ActionHead, HeadOutput
from openvla.model.heads.diffusion import DiffusionHead
from openvla.model.heads.fast import FastHead
from openvla.model.heads.flow import FlowHead
from openvla.model.heads.l1 import L1Head
from openvla.model.heads.tokens import TokenHead

HEADS: dict[str, type[ActionHead]] = {
    "tokens": TokenHead,
    "l1": L1Head,
    "diffusion": DiffusionHead,
    "flow": FlowHead,
    "fast": FastHead,
}


def head_class(name: str) -> type[ActionHead]:
    """The head registered as ``name``; an unknown name lists the valid ones."""
    if name not in HEADS:
        raise ValueError(f"unknown action_head {name!r}; valid: {', '.join(HEADS)}")
    return HEADS[name]


__all__ = ["HEADS", "ActionHead", "HeadOutput", "head_class"]
