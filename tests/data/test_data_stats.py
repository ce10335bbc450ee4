"""Statistics: streaming moments and quantiles match numpy; layout, mask, caching and empty-dataset errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from data_testutils import FIXTURES, make_episodes

from openvla.data.lerobot import LeRobotDataset, write_dataset
from openvla.data.stats import RunningStats, compute_statistics, load_or_compute_statistics, statistics_path


def test_running_stats_match_numpy_exactly_below_reservoir():
    rng = np.random.default_rng(0)
    data = rng.normal(3, 2, size=(5000, 4)).astype(np.float32)
    stats = RunningStats()
    for chunk in np.array_split(data, 7):
        stats.update(chunk)
    r = stats.result()
    np.testing.assert_allclose(r["mean"], data.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(r["std"], data.astype(np.float64).std(0), rtol=1e-10)
    np.testing.assert_array_equal(r["min"], data.min(0))
    np.testing.assert_allclose(r["q01"], np.quantile(data.astype(np.float64), 0.01, axis=0), rtol=1e-12)
    np.testing.assert_allclose(r["q99"], np.quantile(data.astype(np.float64), 0.99, axis=0), rtol=1e-12)


def test_running_stats_reservoir_keeps_memory_bounded_and_estimates_quantiles():
    rng = np.random.default_rng(1)
    data = rng.uniform(0, 1, size=(60_000, 2))
    stats = RunningStats(reservoir=10_000)
    for chunk in np.array_split(data, 13):
        stats.update(chunk)
    assert stats.rows().shape == (10_000, 2)
    r = stats.result()
    np.testing.assert_allclose(r["mean"], data.mean(0), rtol=1e-12)  # moments stay exact
    np.testing.assert_allclose(r["q01"], 0.01, atol=0.004)
    np.testing.assert_allclose(r["q99"], 0.99, atol=0.004)


def test_compute_statistics_reference_layout_and_values():
    episodes = make_episodes(5)
    stats = compute_statistics(episodes, "demo")
    entry = stats["demo"]
    actions = np.concatenate([e.actions for e in episodes])
    states = np.concatenate([e.states for e in episodes])
    assert set(entry) == {"action", "proprio", "num_transitions", "num_trajectories"}
    assert set(entry["action"]) == {"mean", "std", "max", "min", "q01", "q99", "mask"}
    assert set(entry["proprio"]) == {"mean", "std", "max", "min", "q01", "q99"}
    assert entry["num_transitions"] == len(actions) and entry["num_trajectories"] == 5
    assert entry["action"]["mask"] == [True] * 6 + [False]
    np.testing.assert_allclose(entry["action"]["q01"], np.quantile(actions, 0.01, axis=0), rtol=1e-6)
    np.testing.assert_allclose(entry["action"]["std"], actions.std(0), rtol=1e-5)
    np.testing.assert_allclose(entry["proprio"]["q99"], np.quantile(states, 0.99, axis=0), rtol=1e-6)
    json.dumps(stats)  # plain JSON types


def test_mask_parameter_no_proprio_and_errors():
    episodes = make_episodes(2, state_dim=None)
    entry = compute_statistics(episodes, "d", action_mask=[True] * 7)["d"]
    assert entry["action"]["mask"] == [True] * 7
    assert entry["proprio"]["mean"] == [0.0] * 7  # the reference's zero proprio when there is none
    with pytest.raises(ValueError, match="empty dataset 'nothing'"):
        compute_statistics([], "nothing")
    with pytest.raises(ValueError, match="mask has 3 entries for 7"):
        compute_statistics(episodes, "d", action_mask=[True] * 3)
    odd = make_episodes(1, seed=3, action_dim=6)
    with pytest.raises(ValueError, match="episode 0 of 'synthetic': action size 6 differs from earlier episodes"):
        compute_statistics(episodes + odd, "d")


def test_cached_next_to_data_and_recomputed_when_stale(tmp_path):
    write_dataset(tmp_path / "ds", make_episodes(3), fps=10)
    path = statistics_path(tmp_path / "ds")
    written = json.loads(path.read_text())
    ds = LeRobotDataset(tmp_path / "ds")
    assert load_or_compute_statistics(ds) == written
    np.testing.assert_allclose(written["ds"]["action"]["mean"], ds.actions.mean(0), rtol=1e-5)
    tampered = json.loads(path.read_text())
    tampered["ds"]["num_transitions"] = 1
    path.write_text(json.dumps(tampered))
    assert load_or_compute_statistics(ds)["ds"]["num_transitions"] == ds.num_frames
    masked = load_or_compute_statistics(ds, action_mask=[True] * 7)
    assert masked["ds"]["action"]["mask"] == [True] * 7
    assert json.loads(path.read_text())["ds"]["action"]["mask"] == [True] * 7


def test_read_only_dataset_statistics_go_to_user_cache():
    root = FIXTURES / "lerobot-v3-images"
    stats = load_or_compute_statistics(root)
    assert not statistics_path(root).exists()
    cached = list((__import__("pathlib").Path(os.environ["OPENVLA_CACHE_DIR"]) / "statistics").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == stats
    expected = json.loads((FIXTURES / "lerobot-v3-images.expected.json").read_text())
    actions = np.float32(expected["actions"])
    np.testing.assert_allclose(stats["lerobot-v3-images"]["action"]["q99"], np.quantile(actions, 0.99, axis=0),
                               rtol=1e-6)
