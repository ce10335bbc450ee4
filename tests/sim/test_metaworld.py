"""Meta-World adapter: task sets, groups, instructions, seeds, and the env's observations."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("metaworld")

from openvla.sim import metaworld as mw  # noqa: E402


def test_sets_and_groups_match_the_published_tables():
    assert len(mw.TASKS) == 50 and len(mw.MT10) == 10 and set(mw.MT10) <= set(mw.TASKS)
    sizes = {g: len(t) for g, t in mw.GROUPS.items()}
    assert sizes == {"easy": 28, "medium": 11, "hard": 6, "very_hard": 5}
    grouped = [t for tasks in mw.GROUPS.values() for t in tasks]
    assert sorted(grouped) == sorted(mw.TASKS)  # every task in exactly one group
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS, MT10_V3

    assert set(mw.TASKS) == set(ALL_V3_ENVIRONMENTS) and set(mw.MT10) == set(MT10_V3)
    assert all(mw.INSTRUCTIONS[t] for t in mw.TASKS)
    assert len(set(mw.INSTRUCTIONS.values())) == 50


def test_resolve_tasks_sets_short_names_and_errors():
    assert mw.resolve_tasks("mt10") == list(mw.MT10)
    assert len(mw.resolve_tasks("mt50")) == 50
    assert mw.resolve_tasks("reach,push-v3,reach") == ["reach-v3", "push-v3"]
    assert mw.resolve_tasks("very_hard") == list(mw.GROUPS["very_hard"])
    with pytest.raises(ValueError) as err:
        mw.resolve_tasks("reach,open-the-fridge")
    message = str(err.value)
    assert "open-the-fridge" in message and "drawer-open-v3" in message and "mt10" in message


def test_demo_and_eval_seeds_never_meet():
    demo = {mw.episode_seed("demo", s, t, e) for s in range(3) for t in mw.MT10 for e in range(60)}
    evals = {mw.episode_seed("eval", s, t, e) for s in range(3) for t in mw.MT10 for e in range(60)}
    assert len(demo) == len(evals) == 3 * 10 * 60 and not demo & evals
    with pytest.raises(ValueError):
        mw.episode_seed("train", 0, "reach-v3", 0)


def test_env_observation_seeding_and_camera():
    env = mw.MetaWorldEnv("pick-place", image_size=64, max_steps=20)
    try:
        a, b, c = env.reset(seed=1), env.reset(seed=1), env.reset(seed=2)
        assert a["image"].shape == (64, 64, 3) and a["image"].dtype == np.uint8
        assert a["state"].shape == (4,) and a["state"].dtype == np.float32
        assert a["instruction"] == mw.INSTRUCTIONS["pick-place-v3"] and a["task"] == "pick-place-v3"
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["sim_state"], b["sim_state"])
        assert not np.allclose(a["sim_state"][4:7], c["sim_state"][4:7])  # object moved with the seed
        assert a["image"].std() > 10  # a scene, not a blank frame
        obs, reward, success = env.step(np.array([0.0, 0.0, 1.0, 0.0]))
        assert obs["state"][2] > a["state"][2] and isinstance(reward, float) and success is False
    finally:
        env.close()
    with pytest.raises(ValueError, match="corner2"):
        mw.MetaWorldEnv("reach", camera="ceiling")
