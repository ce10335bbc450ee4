"""Serving an OFT-style model: action chunks, a wrist camera and proprio state go through the same API."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from serve_testutils import ServerThread

from openvla import VLA, get_preset
from openvla.serve import Client
from openvla.serve.protocol import pack, unpack
from openvla.serve.server import create_app

MSGPACK = {"Content-Type": "application/msgpack"}
STATS = {"toy": {"action": {"q01": [-2.0] * 4, "q99": [2.0] * 4, "mask": [True, True, True, False]},
                 "proprio": {"q01": [0.0] * 3, "q99": [10.0] * 3}}}


@pytest.fixture(scope="module")
def oft_vla() -> VLA:
    cfg = get_preset("tiny")
    if not hasattr(cfg, "action_chunk"):
        pytest.skip("this build's VLA has no action chunks")
    for v in cfg.vision:
        v.image_size = 56
    cfg.action_dim, cfg.action_chunk, cfg.parallel_decoding = 4, 4, True
    cfg.action_head, cfg.proprio_dim, cfg.cameras = "l1", 3, ["image", "wrist_image"]
    cfg.norm_stats = STATS
    return VLA.create(cfg, ["open the drawer"], seed=0).eval()


def test_chunks_wrist_camera_and_state(oft_vla):
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), "instruction": "open the drawer",
           "wrist_image": rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), "state": np.float32([1, 5, 9])}
    expected = oft_vla.predict_action(image=obs["image"], instruction=obs["instruction"],
                                      wrist_image=obs["wrist_image"], proprio=obs["state"][None])
    assert expected.shape == (4, 4)
    with ServerThread(create_app(oft_vla)) as server:
        server.wait_ready()
        meta = httpx.get(f"{server.url}/metadata").json()
        assert meta["chunk_length"] == 4 and meta["action_dim"] == 4 and meta["proprio_dim"] == 3
        assert meta["inputs"] == ["image", "instruction", "wrist_image", "state"]

        resp = httpx.post(f"{server.url}/act", content=pack(obs), headers=MSGPACK, timeout=30)
        assert resp.status_code == 200, resp.text
        assert np.array_equal(unpack(resp.content)["action"], expected)  # [chunk, D], as in process

        for missing, fragment in (("wrist_image", "no 'wrist_image' image"), ("state", "proprio state")):
            body = pack({k: v for k, v in obs.items() if k != missing})
            resp = httpx.post(f"{server.url}/act", content=body, headers=MSGPACK, timeout=30)
            assert resp.status_code == 422 and fragment in resp.json()["error"]
        short_state = pack({**obs, "state": np.float32([1, 2])})
        resp = httpx.post(f"{server.url}/act", content=short_state, headers=MSGPACK, timeout=30)
        assert resp.status_code == 422 and "'state' must have 3 values, got 2" in resp.json()["error"]

        with Client(server.url) as client:
            chunk = client.act(obs)
        assert chunk.shape == (4, 4) and np.array_equal(chunk, expected.astype(np.float32))


@pytest.mark.parametrize("head", ["flow", "fast", "diffusion"])
def test_every_chunk_head_serves_what_it_predicts_in_process(head):
    cfg = get_preset("tiny")
    for v in cfg.vision:
        v.image_size = 56
    cfg.action_dim, cfg.action_chunk, cfg.proprio_dim = 4, 4, 3
    cfg.action_head, cfg.parallel_decoding = head, head != "fast"
    cfg.flow_steps, cfg.diffusion_steps = 3, 3
    cfg.norm_stats = STATS
    vla = VLA.create(cfg, ["open the drawer"], seed=0).eval()
    rng = np.random.default_rng(1)
    obs = [{"image": rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), "instruction": "open the drawer",
            "state": np.float32([1, 5, 9]) * (i + 1)} for i in range(2)]
    expected = [vla.predict_action(image=o["image"], instruction=o["instruction"], proprio=o["state"][None])
                for o in obs]
    with ServerThread(create_app(vla)) as server:
        server.wait_ready()
        assert httpx.get(f"{server.url}/metadata").json()["chunk_length"] == 4
        for o, want in zip(obs, expected, strict=True):
            resp = httpx.post(f"{server.url}/act", content=pack(o), headers=MSGPACK, timeout=60)
            assert resp.status_code == 200, resp.text
            np.testing.assert_allclose(unpack(resp.content)["action"], want, atol=1e-6)
