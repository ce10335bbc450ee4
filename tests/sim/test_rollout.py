"""The lockstep episode runner on a tiny fake env: chunks, open-loop steps, batching and failures."""

from __future__ import annotations

import numpy as np
import pytest

from openvla.sim.rollout import EnvPool, EpisodeSpec, check_chunk, run_episodes


class LineEnv:
    """A 1-D world: the agent adds action[0] to its position; success at position >= 3."""

    def __init__(self, task: str):
        self.task, self.x = task, 0.0

    def reset(self, seed: int, episode: int = 0) -> dict:
        if self.task == "broken":
            raise RuntimeError("the simulator fell over")
        self.x = 0.0
        return self._obs()

    def step(self, action: np.ndarray):
        self.x += float(action[0])
        return self._obs(), float(self.x), self.x >= 3

    def _obs(self) -> dict:
        return {"image": np.zeros((4, 4, 3), np.uint8), "instruction": self.task,
                "state": np.array([self.x], np.float32)}

    def close(self) -> None:
        pass


class ChunkPolicy:
    """Returns a chunk of `size` actions of +0.5; counts its calls."""

    def __init__(self, size: int = 4):
        self.size, self.calls, self.resets = size, 0, 0

    def reset(self) -> None:
        self.resets += 1

    def act(self, observation: dict) -> np.ndarray:
        self.calls += 1
        return np.full((self.size, 2), 0.5, np.float32)


def _run(policy, tasks=("a",), n=1, num_envs=1, open_loop_steps=None, max_steps=20):
    specs = [EpisodeSpec(t, i, i, max_steps, record=True) for t in tasks for i in range(n)]
    with EnvPool(LineEnv, num_envs, processes=False) as pool:
        return list(run_episodes(policy, specs, pool, action_dim=2, open_loop_steps=open_loop_steps))


def test_check_chunk_accepts_one_action_and_rejects_bad_shapes():
    assert check_chunk([0.1, 0.2], 2).shape == (1, 2)
    for bad, why in (([[0.1, 0.2, 0.3]], "shape"), (np.zeros((0, 2)), "shape"), ([[np.nan, 0]], "NaN"),
                     ("left", "not an array")):
        with pytest.raises(ValueError, match=why):
            check_chunk(bad, 2)


def test_open_loop_steps_decide_how_often_the_policy_is_asked():
    whole = ChunkPolicy()
    (result,) = _run(whole)
    assert result.success and result.steps == 6 and whole.calls == 2  # 6 steps of +0.5, 4 per chunk
    assert len(result.frames) == 7 and len(result.actions) == 6  # frames include the last observation
    partial = ChunkPolicy()
    _run(partial, open_loop_steps=1)
    assert partial.calls == 6


def test_lockstep_envs_use_act_batch_once_per_step():
    class Batched(ChunkPolicy):
        def __init__(self):
            super().__init__(size=1)
            self.batch_sizes = []

        def act_batch(self, observations):
            self.batch_sizes.append(len(observations))
            return [np.array([[1.0, 0.0]], np.float32) for _ in observations]

    policy = Batched()
    results = _run(policy, tasks=("a", "b"), n=2, num_envs=2)
    assert [r.success for r in results] == [True] * 4 and all(r.steps == 3 for r in results)
    assert policy.batch_sizes == [2] * 6 and policy.calls == 0  # 2 waves x 3 steps, never act()
    assert policy.resets == 2  # once per wave


def test_failures_are_recorded_per_episode_and_the_rest_goes_on():
    class Faulty(ChunkPolicy):
        def act(self, observation):
            kind = self.resets % 4  # one misbehaviour per episode, then a good one
            if kind == 1:
                return np.zeros((1, 7))
            if kind == 2:
                return np.full((1, 2), np.nan)
            if kind == 3:
                raise RuntimeError("model exploded")
            return super().act(observation)

    results = _run(Faulty(), n=4) + _run(ChunkPolicy(), tasks=("broken",))
    errors = [r.error for r in results]
    assert "shape (1, 7)" in errors[0] and "NaN" in errors[1] and "RuntimeError: model exploded" in errors[2]
    assert errors[3] is None and results[3].success
    assert "env reset failed" in errors[4] and "fell over" in errors[4]
    assert not any(r.success for r in results[:3])


def test_episode_ends_at_max_steps():
    class Still(ChunkPolicy):
        def act(self, observation):
            return np.zeros((1, 2), np.float32)

    (result,) = _run(Still(), max_steps=7)
    assert not result.success and result.steps == 7 and result.error is None


def dying_env(task: str) -> LineEnv:
    """A LineEnv whose worker process dies when asked for the task "die"."""
    if task == "die":
        import os

        os._exit(3)
    return LineEnv(task)


def test_a_dead_worker_fails_its_episode_and_is_restarted():
    specs = [EpisodeSpec(t, 0, 0, 20) for t in ("die", "a")]
    with EnvPool(dying_env, 1, processes=True) as pool:
        first, second = run_episodes(ChunkPolicy(), specs, pool, action_dim=2)
    assert "env worker died (exit code 3)" in first.error and not first.success
    assert second.error is None and second.success


def test_temporal_ensemble_executes_the_weighted_mean_of_overlapping_chunks():
    class Counting(ChunkPolicy):
        """Call k returns a chunk whose every action is k / 10 (each step's predictions are distinct)."""

        def act(self, observation: dict) -> np.ndarray:
            self.calls += 1
            return np.full((3, 2), self.calls / 10, np.float32)

    policy = Counting()
    specs = [EpisodeSpec("a", 0, 0, 4, record=True)]
    with EnvPool(LineEnv, 1, processes=False) as pool:
        (result,) = run_episodes(policy, specs, pool, action_dim=2, temporal_ensemble=0.5)
    assert policy.calls == 4  # asked every step
    w = np.exp(-0.5 * np.arange(3))
    expected = [1.0, (w[:2] @ [1, 2]) / w[:2].sum(), (w @ [1, 2, 3]) / w.sum(), (w @ [2, 3, 4]) / w.sum()]
    np.testing.assert_allclose([10 * a[0] for a in result.actions], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="decay"):
        list(run_episodes(policy, specs, EnvPool(LineEnv, 1, processes=False), 2, temporal_ensemble=-1))
