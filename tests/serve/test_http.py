"""Every answer is JSON, whatever went wrong (405 with Allow, no slash redirects, malformed HTTP, unexpected
errors), and the OpenAPI schema of `/act` is published so clients and fuzzers can use it."""

from __future__ import annotations

import json
import socket

import httpx
import json_numpy
import numpy as np
import pytest
from serve_testutils import EchoPolicy, ServerThread

from openvla.serve.server import create_app


@pytest.fixture(scope="module")
def echo_server():
    app = create_app(EchoPolicy())

    @app.get("/boom")
    async def boom() -> None:  # a bug in a handler
        raise RuntimeError("kaput")

    with ServerThread(app) as server:
        server.wait_ready()
        yield server


def raw_exchange(url: str, data: bytes) -> tuple[bytes, bytes]:
    """Send raw bytes, read until the server closes: (status line and headers, body)."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return head, body


def test_wrong_method_is_405_with_allow(echo_server):
    resp = httpx.get(f"{echo_server.url}/act")
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    assert resp.json() == {"error": "Method Not Allowed", "status": 405}
    resp = httpx.post(f"{echo_server.url}/healthz")
    assert resp.status_code == 405 and "GET" in resp.headers["allow"]


def test_trailing_slash_is_a_json_404_not_a_redirect(echo_server):
    for method in ("GET", "POST"):
        resp = httpx.request(method, f"{echo_server.url}/act/", follow_redirects=False)
        assert resp.status_code == 404 and resp.json() == {"error": "Not Found", "status": 404}


@pytest.mark.parametrize("data", [b"GARBAGE\r\n\r\n", b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
                                  b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"])
def test_malformed_http_is_a_json_400(echo_server, data):
    head, body = raw_exchange(echo_server.url, data)
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"content-type: application/json" in head.lower()
    reply = json.loads(body)
    assert reply["status"] == 400 and reply["error"].startswith("malformed HTTP request")


def test_unexpected_error_is_a_json_500(echo_server):
    resp = httpx.get(f"{echo_server.url}/boom")
    assert resp.status_code == 500
    assert resp.json() == {"error": "internal error: RuntimeError: kaput", "status": 500}


def test_openapi_schema_describes_act(echo_server):
    jsonschema = pytest.importorskip("jsonschema")
    spec = httpx.get(f"{echo_server.url}/openapi.json").json()
    assert spec["openapi"].startswith("3.") and {"/act", "/healthz", "/metadata"} <= set(spec["paths"])
    act = spec["paths"]["/act"]["post"]
    content = act["requestBody"]["content"]
    assert set(content) == {"application/json", "application/msgpack"}
    assert {"200", "400", "401", "408", "413", "422", "500", "503", "504"} <= set(act["responses"])

    # a real request validates against the published schema, a wrong one does not
    schema = content["application/json"]["schema"]
    body = json.loads(json_numpy.dumps({"image": np.zeros((4, 4, 3), np.uint8), "instruction": "x"}))
    jsonschema.validate(body, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"image": body["image"]}, schema)  # no instruction

    # the real reply and a real error validate against their response schemas
    reply = httpx.post(f"{echo_server.url}/act", content=json.dumps(body)).json()
    jsonschema.validate(reply, act["responses"]["200"]["content"]["application/json"]["schema"])
    error = httpx.post(f"{echo_server.url}/act", content=b"{").json()
    jsonschema.validate(error, act["responses"]["400"]["content"]["application/json"]["schema"])
    assert httpx.get(f"{echo_server.url}/docs").status_code == 404  # still no API browser
