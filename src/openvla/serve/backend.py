"""What the server runs: a VLA (batched, per-request unnorm keys) or any other ``Policy``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from openvla.serve.protocol import ActRequest


class Backend(Protocol):
    """The model side of the server; only the batcher's worker thread calls ``predict``."""

    def check(self, request: ActRequest) -> str | None:
        """Raise ValueError for a request this model cannot take; return its group (the unnorm key)."""

    def predict(self, requests: list[ActRequest], group: str | None) -> list[np.ndarray]:
        """One batched call: an action [D] or chunk [T, D] per request."""

    def metadata(self) -> dict[str, Any]:
        """What clients need to know: model name, action size, chunk length, unnorm keys, inputs."""


class VLABackend:
    """A VLA: requests sharing an unnorm key run as one batched call; the model's processor maps each request
    (its cameras by name, instruction, raw state) to model inputs exactly as in training."""

    def __init__(self, vla: Any, unnorm_key: str | None = None) -> None:
        self.vla = vla.eval()
        cfg = vla.config
        self.cameras = list(cfg.cameras)
        self.proprio_dim = int(cfg.proprio_dim or 0)
        self.chunk_length = int(cfg.action_chunk or 1)
        self.default_key = unnorm_key
        if unnorm_key is not None:
            vla.resolve_unnorm_key(unnorm_key)  # fail at start-up on a wrong --unnorm-key

    def check(self, request: ActRequest) -> str | None:
        key = self.vla.resolve_unnorm_key(request.unnorm_key if request.unnorm_key is not None
                                          else self.default_key)
        self.vla.processor.camera_frames(request.observation())  # every camera the model takes, by name
        if self.proprio_dim:
            if request.state is None:
                raise ValueError(f"this model takes a {self.proprio_dim}-D proprio state: send 'state'")
            if request.state.shape[0] != self.proprio_dim:
                raise ValueError(f"'state' must have {self.proprio_dim} values, got {request.state.shape[0]}")
        return key

    def predict(self, requests: list[ActRequest], group: str | None) -> list[np.ndarray]:
        chunks = self.vla.predict_observations([r.observation() for r in requests], group)
        # A one-step chunk [1, D] goes out as a single action [D], as the reference server sends it.
        return [c[0] if self.chunk_length == 1 else c for c in chunks]

    def warm_up(self) -> None:
        """One prediction on a blank frame: compiles kernels and proves the checkpoint works end to end."""
        size = self.vla.config.image_size
        keys = sorted(self.vla.norm_stats)
        key = self.default_key or (keys[0] if keys else None)
        blank = np.zeros((size, size, 3), np.uint8)
        state = np.zeros(self.proprio_dim, np.float32) if self.proprio_dim else None
        request = ActRequest(blank, "warm up", key, None, state, images={c: blank for c in self.cameras})
        self.predict([request], self.check(request))

    def metadata(self) -> dict[str, Any]:
        cfg = self.vla.config
        keys = sorted(self.vla.norm_stats)
        default = self.default_key or cfg.default_unnorm_key or (keys[0] if len(keys) == 1 else None)
        # Cameras after the first go by name, at the top level or under "images" (the first may be "image").
        inputs = ["image", "instruction", *self.cameras[1:]] + (["state"] if self.proprio_dim else [])
        return {
            "model": cfg.name,
            "action_dim": self.vla.action_dim_for(default),
            "action_dims": {k: self.vla.action_dim_for(k) for k in keys},
            "chunk_length": self.chunk_length,
            "unnorm_keys": keys,
            "default_unnorm_key": default,
            "image_size": cfg.image_size,
            "cameras": self.cameras,
            "inputs": inputs,
            "proprio_dim": self.proprio_dim,
        }

    def token_cap(self) -> Any:
        """The server's instruction cap in tokens (``serve/tokens.py``); None when the model has no tokenizer."""
        from openvla.serve.tokens import TokenCap

        tokenizer = self.vla.processor.tokenizer
        return None if tokenizer is None else TokenCap(tokenizer, self.vla.config)


class PolicyBackend:
    """Any ``Policy`` (``act``, or ``act_batch`` for batched calls); its unnorm key is fixed."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def check(self, request: ActRequest) -> str | None:
        if request.unnorm_key is not None:
            raise ValueError("this server's policy has a fixed unnorm_key; leave 'unnorm_key' out")
        return None

    def predict(self, requests: list[ActRequest], group: str | None) -> list[np.ndarray]:
        observations = [r.observation() for r in requests]
        act_batch = getattr(self.policy, "act_batch", None)
        if act_batch is not None:
            chunks = act_batch(observations)
        else:
            chunks = [self.policy.act(o) for o in observations]
        # A one-step chunk [1, D] goes out as a single action [D], as the reference server sends it.
        return [a[0] if a.ndim == 2 and a.shape[0] == 1 else a for a in map(np.asarray, chunks)]

    def warm_up(self) -> None:
        """The policy's own ``warm_up()``, when it has one (the server says "loading" until it returns)."""
        warm_up = getattr(self.policy, "warm_up", None)
        if warm_up is not None:
            warm_up()

    def metadata(self) -> dict[str, Any]:
        return {"model": type(self.policy).__name__, "action_dim": None, "action_dims": {},
                "chunk_length": None, "unnorm_keys": [], "default_unnorm_key": None, "image_size": None,
                "inputs": ["image", "instruction", "wrist_image", "state"], "proprio_dim": None}


def make_backend(target: Any, unnorm_key: str | None = None, device: str | None = None,
                 dtype: str | None = None, compile: bool = False, quantize: str | None = None,
                 ) -> VLABackend | PolicyBackend:
    """A checkpoint directory, a VLA, a VLAPolicy, any Policy, or a zero-argument loader of one of those;
    ``quantize`` (int8, bnb8, bnb4) and ``compile`` apply to a VLA loaded from a checkpoint directory."""
    if isinstance(target, str | Path):
        import torch

        from openvla.model.policy import load_for_inference

        torch_dtype = getattr(torch, dtype) if dtype else None
        target = load_for_inference(target, device=device, dtype=torch_dtype, compile=compile, quantize=quantize)
    if hasattr(getattr(target, "vla", None), "predict_action") and hasattr(target, "act"):  # a VLAPolicy
        unnorm_key, target = unnorm_key or getattr(target, "unnorm_key", None), target.vla
    if hasattr(target, "predict_action"):
        return VLABackend(target, unnorm_key)
    if hasattr(target, "act"):
        return PolicyBackend(target)
    if callable(target):
        return make_backend(target(), unnorm_key, device, dtype, compile, quantize)
    raise TypeError(f"cannot serve a {type(target).__name__}: pass a checkpoint directory, a VLA or a Policy")
