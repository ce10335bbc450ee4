"""Turn a policy spec (``expert``, ``random``, ``http://HOST:PORT`` or a checkpoint dir) into a Policy; wrap one to
give it other instructions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openvla.policy import Observation, Policy
from openvla.sim.experts import ExpertPolicy, RandomPolicy


def load_policy(spec: str, *, action_dim: int = 4, seed: int = 0, **kwargs: Any) -> Policy:
    """Resolve `spec`; `kwargs` (device, unnorm_key; None dropped) go to the loader, unnorm_key to Client."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if spec == "expert":
        return ExpertPolicy()
    if spec == "random":
        return RandomPolicy(action_dim=action_dim, seed=seed)
    if spec.startswith(("http://", "https://")):
        from openvla.serve import Client

        return Client(spec, unnorm_key=kwargs.get("unnorm_key"))
    path = Path(spec).expanduser()
    if path.is_dir():
        from openvla.model.policy import VLAPolicy

        return VLAPolicy.from_pretrained(path, **kwargs)
    raise ValueError(f"policy {spec!r} is neither 'expert', 'random', an http(s):// URL nor a checkpoint "
                     "directory that exists")


class InstructionSwap:
    """A policy told another task's instruction: each observation's instruction becomes ``instructions[task]``
    for its scene's task (tasks not listed keep theirs). Language grounding: same scene, other words."""

    def __init__(self, policy: Policy, instructions: dict[str, str]) -> None:
        self.policy, self.instructions = policy, instructions

    def reset(self) -> None:
        self.policy.reset()

    def _swap(self, obs: Observation) -> Observation:
        return {**obs, "instruction": self.instructions.get(obs.get("task"), obs["instruction"])}

    def act(self, obs: Observation) -> Any:
        return self.policy.act(self._swap(obs))

    def act_batch(self, observations: list[Observation]) -> Any:
        return self.policy.act_batch([self._swap(o) for o in observations])
