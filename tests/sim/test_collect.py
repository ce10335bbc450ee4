"""Demonstration collection: a LeRobot dataset that reads back, failures dropped, resume after a stop."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("metaworld")

from openvla.data.lerobot import LeRobotDataset  # noqa: E402
from openvla.sim import collect  # noqa: E402
from openvla.sim import metaworld as mw  # noqa: E402


def test_collect_writes_a_dataset_that_reads_back(tmp_path, capsys):
    out = collect.collect_metaworld(tasks="reach,drawer-close", episodes_per_task=2, out=tmp_path / "demos",
                                    workers=1, seed=0, image_size=64, progress=False)
    info = json.loads((out / "collect_info.json").read_text())
    assert info["per_task"] == {"reach-v3": {"kept": 2, "failed": 0},
                                "drawer-close-v3": {"kept": 2, "failed": 0}}
    assert not (tmp_path / "demos.partial").exists()  # the resume cache goes once the dataset is written
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 4 and ds.cameras == ["image"]
    instructions = []
    for i in range(4):
        ep = ds.episode(i)
        n = len(ep)
        assert ep.images["image"].shape == (n, 64, 64, 3) and ep.images["image"].dtype == np.uint8
        assert ep.actions.shape == (n, 4) and ep.states.shape == (n, 4)
        assert np.abs(ep.actions).max() <= 1.0 and 10 < n < 500
        instructions.append(ep.instruction)
    assert instructions == [mw.INSTRUCTIONS["reach-v3"]] * 2 + [mw.INSTRUCTIONS["drawer-close-v3"]] * 2
    # The same frames the env gives a policy for that seed.
    env = mw.MetaWorldEnv("reach", image_size=64)
    try:
        first = env.reset(mw.episode_seed("demo", 0, "reach-v3", 0))
    finally:
        env.close()
    np.testing.assert_array_equal(ds.episode(0).images["image"][0], first["image"])
    np.testing.assert_allclose(ds.episode(0).states[0], first["state"])
    from openvla.cli import main

    assert main(["data", "info", str(out)]) == 0
    assert "episodes  4" in capsys.readouterr().out
    # Running the same command again is a no-op; a different command into it is refused.
    assert collect.collect_metaworld(tasks="reach,drawer-close", episodes_per_task=2, out=out,
                                     image_size=64, progress=False) == out
    with pytest.raises(FileExistsError):
        collect.collect_metaworld(tasks="reach", episodes_per_task=3, out=out, progress=False)


def test_interrupted_collection_resumes_without_redoing_kept_episodes(tmp_path, monkeypatch):
    out = tmp_path / "demos"
    real_run = collect.run_episodes
    ran: list[tuple[str, int]] = []

    def stop_after_two(policy, specs, pool, action_dim, *a, **kw):
        for i, result in enumerate(real_run(policy, specs, pool, action_dim, *a, **kw)):
            ran.append((result.spec.task, result.spec.episode))
            yield result
            if i == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(collect, "run_episodes", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        collect.collect_metaworld(tasks="reach", episodes_per_task=3, out=out, workers=1, image_size=32,
                                  progress=False)
    assert ran == [("reach-v3", 0), ("reach-v3", 1)] and not out.exists()

    def count(policy, specs, pool, action_dim, *a, **kw):
        specs = list(specs)
        ran.extend(("resumed", s.episode) for s in specs)
        yield from real_run(policy, specs, pool, action_dim, *a, **kw)

    monkeypatch.setattr(collect, "run_episodes", count)
    collect.collect_metaworld(tasks="reach", episodes_per_task=3, out=out, workers=1, image_size=32,
                              progress=False)
    assert ran[2:] == [("resumed", 2)]  # only the missing episode was run
    assert LeRobotDataset(out).num_episodes == 3
