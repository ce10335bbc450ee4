"""`openvla.serve.Client`: the Policy protocol over HTTP, against the real tiny-model server."""

from __future__ import annotations

import numpy as np
import pytest
from serve_testutils import EchoPolicy, ServerThread, echo_action

from openvla.policy import Policy
from openvla.serve import Client, ServerError
from openvla.serve.server import ServeSettings, create_app


@pytest.mark.parametrize("protocol", ["msgpack", "json"])
def test_client_acts_like_the_model_in_process(vla_server, local_vla, images, protocol):
    with Client(vla_server.url, unnorm_key="bridge", protocol=protocol) as client:
        assert isinstance(client, Policy)
        client.reset()
        obs = {"image": images[3], "instruction": "open the drawer", "state": np.zeros(8, np.float32),
               "wrist_image": images[4]}  # extras the model does not take are not sent
        chunk = client.act(obs)
        expected = local_vla.predict_action(image=images[3], instruction="open the drawer",
                                            unnorm_key="bridge")
        assert chunk.shape == (1, 7) and chunk.dtype == np.float32
        assert np.array_equal(chunk[0], expected.astype(np.float32))
        assert client.last_timing["infer_ms"] > 0
        assert client.metadata()["unnorm_keys"] == ["bridge", "libero"]


def test_client_batch_runs_concurrently_and_keeps_order(vla_server, local_vla, images):
    with Client(vla_server.url, unnorm_key="libero") as client:
        chunks = client.act_batch([{"image": im, "instruction": "push the button"} for im in images[:4]])
    expected = local_vla.predict_action(image=images[:4], instruction=["push the button"] * 4,
                                        unnorm_key="libero")
    assert [c.shape for c in chunks] == [(1, 7)] * 4
    assert np.array_equal(np.concatenate(chunks), expected.astype(np.float32))


def test_client_raises_the_servers_message(vla_server, images):
    with Client(vla_server.url) as client:
        with pytest.raises(ServerError, match=r"422.*pass unnorm_key, one of \['bridge', 'libero'\]"):
            client.act({"image": images[0], "instruction": "open the drawer"})
    with Client(vla_server.url, unnorm_key="nope") as client:
        with pytest.raises(ServerError) as info:
            client.act({"image": images[0], "instruction": "open the drawer"})
        assert info.value.status == 422 and "valid keys" in info.value.message


def test_client_sends_the_api_key_from_the_environment(monkeypatch):
    with ServerThread(create_app(EchoPolicy(), ServeSettings(api_key="k3y"))) as server:
        server.wait_ready()
        image = np.full((4, 4, 3), 7, np.uint8)
        with Client(server.url, retries=0) as client:
            with pytest.raises(ServerError, match="401"):
                client.act({"image": image, "instruction": "x"})
        monkeypatch.setenv("OPENVLA_API_KEY", "k3y")
        with Client(server.url) as client:
            assert np.array_equal(client.act({"image": image, "instruction": "xy"}), echo_action(image, "xy"))


def test_client_reports_a_server_that_is_not_there():
    with Client("http://127.0.0.1:9", retries=1) as client:
        assert not client.healthy()
        with pytest.raises(ServerError, match="cannot connect"):
            client.act({"image": np.zeros((2, 2, 3), np.uint8), "instruction": "x"})


def test_eval_policy_spec_resolves_to_a_client(vla_server):
    policies = pytest.importorskip("openvla.sim.policies")
    policy = policies.load_policy(vla_server.url)
    assert isinstance(policy, Client) and policy.healthy()
