"""A 3-camera model end to end: Meta-World demos with two extra cameras, a tiny model trained on all three,
closed-loop evaluation with the same cameras, and /act answering named images over HTTP."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("metaworld")

from openvla import VLA  # noqa: E402
from openvla.cli import main  # noqa: E402
from openvla.data.lerobot import LeRobotDataset  # noqa: E402
from openvla.serve.protocol import pack, unpack  # noqa: E402
from openvla.serve.server import create_app  # noqa: E402
from openvla.sim import metaworld as mw  # noqa: E402
from openvla.sim.evaluate import evaluate  # noqa: E402
from openvla.train.config import TrainConfig  # noqa: E402
from openvla.train.trainer import train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from serve_testutils import ServerThread  # noqa: E402

EXTRA = ["corner", "topview"]
CAMERAS = ["image", *EXTRA]
MSGPACK = {"Content-Type": "application/msgpack"}


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    """`openvla collect metaworld` with two extra cameras: 2 short reach demos at 32 px."""
    out = tmp_path_factory.mktemp("three_cameras") / "demos"
    assert main(["collect", "metaworld", "--tasks", "reach", "--episodes-per-task", "2", "--out", str(out),
                 "--workers", "1", "--image-size", "32", "--max-steps", "60", "--no-progress",
                 "--extra-cameras", *EXTRA]) == 0
    return out


@pytest.fixture(scope="module")
def model(demos, tmp_path_factory) -> Path:
    """A tiny model trained for a few steps on the three cameras."""
    run = tmp_path_factory.mktemp("three_cameras") / "run"
    return train(TrainConfig.from_dict({"preset": "tiny", "data": [str(demos)], "out": str(run),
                                        "cameras": CAMERAS, "batch_size": 2, "num_workers": 0, "max_steps": 2,
                                        "save_every": 100, "log_every": 1, "seed": 3}))


@pytest.fixture(scope="module")
def server(model):
    with ServerThread(create_app(model)) as server:
        server.wait_ready()
        yield server


@pytest.fixture(scope="module")
def observation() -> dict:
    """A 3-camera env observation (an eval seed: never seen in training)."""
    env = mw.MetaWorldEnv("reach", image_size=32, extra_cameras=EXTRA)
    try:
        return env.reset(mw.episode_seed("eval", 0, "reach-v3", 0))
    finally:
        env.close()


def test_collection_records_every_camera_by_name(demos):
    ds = LeRobotDataset(demos)
    assert ds.cameras == CAMERAS and ds.num_episodes == 2
    assert json.loads((demos / "collect_info.json").read_text())["extra_cameras"] == EXTRA
    ep = ds.episode(0)
    n = len(ep)
    for cam in CAMERAS:
        assert ep.images[cam].shape == (n, 32, 32, 3) and ep.images[cam].dtype == np.uint8
    assert not np.array_equal(ep.images["corner"], ep.images["topview"])
    # The frames each camera gives a policy for that seed; the primary is the same as a one-camera env's.
    seed = mw.episode_seed("demo", 0, "reach-v3", 0)
    three, one = (mw.MetaWorldEnv("reach", image_size=32, extra_cameras=e) for e in (EXTRA, ()))
    try:
        first, single = three.reset(seed), one.reset(seed)
    finally:
        three.close()
        one.close()
    for cam in CAMERAS:
        np.testing.assert_array_equal(ep.images[cam][0], first[cam])
        np.testing.assert_array_equal(first["images"][cam], first[cam])
    np.testing.assert_array_equal(single["image"], first["image"])
    assert "images" not in single and "corner" not in single


def test_a_three_camera_model_evaluates_closed_loop(model, tmp_path):
    assert VLA.from_pretrained(model).config.cameras == CAMERAS
    out = tmp_path / "eval"
    assert main(["eval", "--policy", str(model), "--tasks", "reach", "--episodes-per-task", "1", "--out", str(out),
                 "--max-steps", "3", "--image-size", "32", "--no-progress", "--extra-cameras", *EXTRA]) == 0
    (row,) = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert row["error"] is None and row["n_steps"] == 3  # a missing camera would have failed the episode
    assert Path(row["video_path"]).stat().st_size > 0
    assert json.loads((out / "eval_config.json").read_text())["env_kwargs"] == {"extra_cameras": EXTRA}
    with pytest.raises(ValueError, match="--extra-cameras corner topview"):  # before any episode runs
        evaluate(str(model), tasks="reach", episodes_per_task=1, max_steps=3, image_size=32, progress=False)


def test_a_three_camera_model_answers_named_images_over_http(model, server, observation):
    body = {"images": observation["images"], "instruction": observation["instruction"]}
    resp = httpx.post(f"{server.url}/act", content=pack(body), headers=MSGPACK, timeout=60)
    assert resp.status_code == 200, resp.text
    action = unpack(resp.content)["action"]
    assert action.shape == (4,) and np.isfinite(action).all()
    local = VLA.from_pretrained(model).eval()
    expected = local.predict_action(images=observation["images"], instruction=observation["instruction"])
    np.testing.assert_allclose(action, expected, rtol=1e-5, atol=1e-6)

    body["images"] = {k: v for k, v in observation["images"].items() if k != "topview"}
    resp = httpx.post(f"{server.url}/act", content=pack(body), headers=MSGPACK, timeout=60)
    assert resp.status_code == 422 and "'topview'" in resp.json()["error"]


def test_camera_names_are_checked_before_anything_runs(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown Meta-World camera 'side'; choose from corner"):
        mw.MetaWorldEnv("reach", extra_cameras=["side"])
    assert main(["collect", "metaworld", "--tasks", "reach", "--out", str(tmp_path / "d"), "--no-progress",
                 "--extra-cameras", "corner2"]) != 0
    assert "extra cameras ['corner2'] repeat a camera or the primary 'corner2'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="applies to metaworld"):
        evaluate("random", env="libero", tasks="libero_spatial/0", extra_cameras=["corner"], progress=False)
    assert not (tmp_path / "d").exists() and not (tmp_path / "d.partial").exists()


def test_the_client_sends_a_three_camera_env_observation(server, observation):
    from openvla.serve import Client

    with Client(server.url) as client:
        assert client.act(observation).shape == (1, 4)
