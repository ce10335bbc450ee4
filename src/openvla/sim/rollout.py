"""Closed-loop episodes: envs in worker processes stepped in lockstep, one (batched) policy call per step."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from openvla.policy import Observation, Policy

EnvFactory = Callable[[str], Any]
"""Builds the env of one task; the env has reset(seed, episode) -> obs, step(action) -> (obs, reward,
success) and close(). Must be picklable (a module-level function or a partial of one) to run in workers."""


@dataclass
class EpisodeSpec:
    """One episode to run: which task, its index within the task, the env seed and the step cap."""

    task: str
    episode: int
    seed: int
    max_steps: int
    record: bool = False  # keep images, states and actions (for videos and demonstrations)


@dataclass
class EpisodeResult:
    """What one episode did; `error` says why it was cut short (policy or env failure), else None."""

    spec: EpisodeSpec
    success: bool
    steps: int
    sum_reward: float
    max_reward: float
    error: str | None
    seconds: float
    frames: list[np.ndarray] = field(default_factory=list)  # observed images, one more than actions
    extra_frames: dict[str, list[np.ndarray]] = field(default_factory=dict)  # other cameras' images, by name
    states: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)


class EnvError(RuntimeError):
    """The simulator failed (or its worker died) while resetting or stepping."""


def check_chunk(chunk: Any, action_dim: int) -> np.ndarray:
    """The policy's output as a float32 [T, action_dim] array, or ValueError saying what is wrong with it."""
    try:
        actions = np.asarray(chunk, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"policy returned {type(chunk).__name__}, not an array of actions ({err})") from None
    if actions.ndim == 1:
        actions = actions[None]
    if actions.ndim != 2 or actions.shape[0] == 0 or actions.shape[1] != action_dim:
        raise ValueError(f"policy returned an action chunk of shape {tuple(actions.shape)}; "
                         f"expected [T, {action_dim}] with T >= 1")
    if not np.isfinite(actions).all():
        raise ValueError("policy returned NaN or infinite actions")
    return actions


class _EnvHost:
    """Holds the env of the task asked for last and runs reset/step on it."""

    def __init__(self, factory: EnvFactory):
        self.factory = factory
        self.task: str | None = None
        self.env: Any = None

    def reset(self, task: str, seed: int, episode: int) -> Observation:
        if task != self.task:
            self.close()
            self.env, self.task = self.factory(task), task
        return self.env.reset(seed, episode)

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool]:
        return self.env.step(action)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env, self.task = None, None


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


class _LocalSlot:
    """An env in this process (num_envs=1): no pipes, easy to debug."""

    def __init__(self, factory: EnvFactory):
        self.host = _EnvHost(factory)
        self._reply: tuple[bool, Any] = (False, "nothing sent")

    def send(self, method: str, *args: Any) -> None:
        try:
            self._reply = (True, getattr(self.host, method)(*args))
        except Exception as err:  # any simulator failure fails the episode, not the run
            self._reply = (False, _describe(err))

    def recv(self) -> Any:
        ok, value = self._reply
        if not ok:
            raise EnvError(value)
        return value

    def close(self) -> None:
        self.host.close()


def _serve(conn: Any, factory: EnvFactory) -> None:
    """Worker process loop: answer (method, args) requests until told to close."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ.setdefault("LP_NUM_THREADS", "1")  # one llvmpipe thread per worker: workers fill the cores
    host = _EnvHost(factory)
    try:
        while True:
            try:
                method, args = conn.recv()
            except EOFError:
                break
            if method == "close":
                break
            try:
                conn.send((True, getattr(host, method)(*args)))
            except Exception as err:
                conn.send((False, _describe(err)))
    finally:
        host.close()


class _ProcessSlot:
    """An env in a worker process; restarted if the worker dies."""

    def __init__(self, factory: EnvFactory):
        self.factory = factory
        self._send_error: str | None = None
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # no fork: GL contexts and torch threads do not survive it
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, self.factory), daemon=True)
        self.proc.start()
        child.close()

    def send(self, method: str, *args: Any) -> None:
        if not self.proc.is_alive():
            self.conn.close()
            self._start()
        try:
            self.conn.send((method, args))
            self._send_error = None
        except (OSError, ValueError) as err:
            self._send_error = f"cannot reach the env worker ({_describe(err)})"

    def recv(self) -> Any:
        if self._send_error is not None:
            raise EnvError(self._send_error)
        try:
            ok, value = self.conn.recv()
        except (EOFError, ConnectionError):
            self.proc.join(timeout=5)
            raise EnvError(f"env worker died (exit code {self.proc.exitcode})") from None
        if not ok:
            raise EnvError(value)
        return value

    def close(self) -> None:
        try:
            self.conn.send(("close", ()))
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()
        self.conn.close()


class EnvPool:
    """`num_envs` env slots: one worker process each, or all in this process (default when num_envs is 1).

    Workers are started with ``spawn``: a script that makes a pool of processes needs the usual
    ``if __name__ == "__main__":`` guard.
    """

    def __init__(self, factory: EnvFactory, num_envs: int = 1, processes: bool | None = None):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        slot = _ProcessSlot if (num_envs > 1 if processes is None else processes) else _LocalSlot
        self.slots = [slot(factory) for _ in range(num_envs)]

    def close(self) -> None:
        """Stop the workers and free the simulators."""
        for slot in self.slots:
            slot.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Run:
    """The running state of one episode in one slot."""

    def __init__(self, spec: EpisodeSpec, slot: Any):
        self.spec, self.slot = spec, slot
        self.obs: Observation | None = None
        self.queue: deque[np.ndarray] = deque()
        self.chunks: list[tuple[int, np.ndarray]] = []  # (step it was predicted at, chunk): temporal ensembling
        self.steps, self.success, self.done = 0, False, False
        self.rewards: list[float] = []
        self.error: str | None = None
        self.frames: list[np.ndarray] = []
        self.extra_frames: dict[str, list[np.ndarray]] = {}
        self.states: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.start = time.perf_counter()

    def fail(self, reason: str) -> None:
        self.error, self.done = reason, True

    def observe(self, obs: Observation) -> None:
        self.obs = obs
        if self.spec.record:
            self.frames.append(obs["image"])
            for name, frame in (obs.get("images") or {}).items():
                if name != "image":
                    self.extra_frames.setdefault(name, []).append(frame)
            if obs.get("state") is not None:
                self.states.append(np.asarray(obs["state"], dtype=np.float32))

    def stepped(self, action: np.ndarray, obs: Observation, reward: float, success: bool) -> None:
        self.steps += 1
        self.rewards.append(reward)
        if self.spec.record:
            self.actions.append(action)
        self.observe(obs)
        self.success = self.success or success
        self.done = self.success or self.steps >= self.spec.max_steps

    def result(self) -> EpisodeResult:
        rewards = self.rewards or [0.0]
        return EpisodeResult(self.spec, self.success, self.steps, float(np.sum(rewards)),
                             float(np.max(rewards)), self.error, time.perf_counter() - self.start,
                             self.frames, self.extra_frames, self.states, self.actions)


def ensembled_action(chunks: list[tuple[int, np.ndarray]], step: int, decay: float) -> np.ndarray:
    """ACT's temporal ensembling: the mean of every chunk's prediction for ``step``, weighted
    ``exp(-decay * i)`` with i = 0 for the oldest prediction."""
    predictions = np.stack([chunk[step - start] for start, chunk in chunks])
    weights = np.exp(-decay * np.arange(len(predictions)))
    return (weights[:, None] * predictions).sum(0) / weights.sum()


def _query_policy(policy: Policy, runs: list[_Run], action_dim: int, open_loop_steps: int | None,
                  temporal_ensemble: float | None = None) -> None:
    """Fill each run's action queue from one policy call (act_batch when the policy has it). With
    ``temporal_ensemble`` (a decay), the queue gets one action: the ensemble of the chunks still covering
    this step."""
    observations = [run.obs for run in runs]
    act_batch = getattr(policy, "act_batch", None)
    chunks: list[Any]
    if act_batch is not None:
        try:
            chunks = list(act_batch(observations))
            if len(chunks) != len(runs):
                raise ValueError(f"act_batch returned {len(chunks)} chunks for {len(runs)} observations")
        except Exception as err:  # a failing policy fails these episodes, not the run
            chunks = [err] * len(runs)
    else:
        chunks = []
        for obs in observations:
            try:
                chunks.append(policy.act(obs))
            except Exception as err:
                chunks.append(err)
    for run, chunk in zip(runs, chunks, strict=True):
        if isinstance(chunk, Exception):
            run.fail(f"policy raised {_describe(chunk)}")
            continue
        try:
            actions = check_chunk(chunk, action_dim)
        except ValueError as err:
            run.fail(str(err))
            continue
        if temporal_ensemble is None:
            run.queue.extend(actions[:open_loop_steps])
            continue
        run.chunks = [(t0, c) for t0, c in run.chunks if t0 + len(c) > run.steps] + [(run.steps, actions)]
        run.queue.append(ensembled_action(run.chunks, run.steps, temporal_ensemble))


def _run_wave(policy: Policy, specs: list[EpisodeSpec], slots: list[Any], action_dim: int,
              open_loop_steps: int | None, on_step: Callable[[int], None] | None,
              temporal_ensemble: float | None = None) -> list[EpisodeResult]:
    runs = [_Run(spec, slot) for spec, slot in zip(specs, slots, strict=False)]
    for run in runs:
        run.slot.send("reset", run.spec.task, run.spec.seed, run.spec.episode)
    for run in runs:
        try:
            run.observe(run.slot.recv())
        except EnvError as err:
            run.fail(f"env reset failed: {err}")
    try:
        policy.reset()
    except Exception as err:
        for run in runs:
            run.fail(f"policy.reset raised {_describe(err)}")
    t = 0
    while active := [run for run in runs if not run.done]:
        needy = [run for run in active if not run.queue]
        if needy:
            _query_policy(policy, needy, action_dim, open_loop_steps, temporal_ensemble)
        stepping = [run for run in active if not run.done]
        actions = [run.queue.popleft() for run in stepping]
        for run, action in zip(stepping, actions, strict=True):
            run.slot.send("step", action)
        for run, action in zip(stepping, actions, strict=True):
            try:
                obs, reward, success = run.slot.recv()
            except EnvError as err:
                run.fail(f"env step failed: {err}")
                continue
            run.stepped(action, obs, reward, success)
        t += 1
        if on_step is not None:
            on_step(t)
    return [run.result() for run in runs]


def run_episodes(policy: Policy, specs: Iterable[EpisodeSpec], pool: EnvPool, action_dim: int,
                 open_loop_steps: int | None = None,
                 on_step: Callable[[int], None] | None = None,
                 temporal_ensemble: float | None = None) -> Iterator[EpisodeResult]:
    """Run `specs` in waves of len(pool.slots) episodes stepped in lockstep; yield each result.

    ``policy.reset()`` is called at the start of every wave (all of its episodes start together). A chunk
    is executed open-loop for `open_loop_steps` actions (all of it when None) before the policy is asked
    again. With ``temporal_ensemble`` (a decay >= 0) the policy is asked every step and the action executed
    is the weighted mean of every chunk's prediction for that step (ACT). A policy that raises or returns a
    bad chunk fails that episode with the reason in `error`.
    """
    if open_loop_steps is not None and open_loop_steps < 1:
        raise ValueError(f"open_loop_steps must be >= 1, got {open_loop_steps}")
    if temporal_ensemble is not None and temporal_ensemble < 0:
        raise ValueError(f"temporal_ensemble is a decay >= 0, got {temporal_ensemble}")
    it = iter(specs)
    while wave := list(islice(it, len(pool.slots))):
        yield from _run_wave(policy, wave, pool.slots, action_dim, open_loop_steps, on_step, temporal_ensemble)
