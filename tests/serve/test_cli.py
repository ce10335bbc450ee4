"""`openvla serve` flags: defaults (loopback, batching on), the API key from the environment, bad values."""

from __future__ import annotations

import pytest

from openvla.cli import build_parser, main


@pytest.fixture
def captured_run(monkeypatch):
    """Replace the server loop with a recorder of what it would have served."""
    calls = []

    def fake_run(target, settings, host, port, log_level):
        calls.append({"target": target, "settings": settings, "host": host, "port": port})
        return 0

    monkeypatch.setattr("openvla.serve.server.run", fake_run)
    return calls


def test_defaults_bind_loopback_and_batch(served_checkpoint, captured_run, monkeypatch):
    monkeypatch.delenv("OPENVLA_API_KEY", raising=False)
    assert main(["serve", "--checkpoint", str(served_checkpoint)]) == 0
    call = captured_run[0]
    assert call["host"] == "127.0.0.1" and call["port"] == 8000 and call["target"] == served_checkpoint
    s = call["settings"]
    assert s.api_key is None and s.max_batch_size == 8 and s.batch_window_ms == 5.0 and s.max_queue == 64
    assert s.request_timeout_s is None  # derived from the warm-up prediction
    assert (s.max_queued_mb, s.body_timeout_s, s.shutdown_drain_s) == (256.0, 10.0, 5.0)


def test_flags_and_api_key_from_environment(served_checkpoint, captured_run, monkeypatch):
    monkeypatch.setenv("OPENVLA_API_KEY", "from-env")
    argv = ["serve", "--checkpoint", str(served_checkpoint), "--host", "0.0.0.0", "--port", "9001",
            "--max-batch-size", "1", "--batch-window-ms", "0", "--max-queue", "4", "--max-body-mb", "2",
            "--unnorm-key", "bridge"]
    assert main(argv) == 0
    s = captured_run[0]["settings"]
    assert captured_run[0]["host"] == "0.0.0.0" and captured_run[0]["port"] == 9001
    assert (s.api_key, s.max_batch_size, s.batch_window_ms, s.max_queue, s.max_body_bytes, s.unnorm_key) == (
        "from-env", 1, 0.0, 4, 2 * 2**20, "bridge")
    assert main(argv + ["--api-key", "flag"]) == 0 and captured_run[1]["settings"].api_key == "flag"


@pytest.mark.parametrize("flag, value", [("--max-batch-size", "0"), ("--max-queue", "0"),
                                         ("--batch-window-ms", "-1"), ("--max-body-mb", "0"),
                                         ("--request-timeout", "0"), ("--body-timeout", "-1"),
                                         ("--shutdown-drain", "-1"), ("--max-queued-mb", "8")])
def test_bad_values_are_clear_errors(served_checkpoint, captured_run, capsys, flag, value):
    assert main(["serve", "--checkpoint", str(served_checkpoint), flag, value]) == 2
    assert flag in capsys.readouterr().err and not captured_run


def test_timeouts_and_memory_bound_reach_the_server(served_checkpoint, captured_run):
    argv = ["serve", "--checkpoint", str(served_checkpoint), "--request-timeout", "300", "--body-timeout", "3",
            "--shutdown-drain", "0", "--max-queued-mb", "64"]
    assert main(argv) == 0
    s = captured_run[0]["settings"]
    assert (s.request_timeout_s, s.body_timeout_s, s.shutdown_drain_s, s.max_queued_mb) == (300, 3, 0, 64)


def test_missing_checkpoint_fails_before_serving(tmp_path, captured_run, capsys):
    assert main(["serve", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err and not captured_run


def test_help_lists_serve():
    assert "serve" in build_parser().format_help()


def test_quantize_and_compile_flags_reach_the_backend(served_checkpoint, captured_run):
    from openvla.serve.backend import make_backend

    assert main(["serve", "--checkpoint", str(served_checkpoint), "--quantize", "bnb8", "--compile"]) == 0
    s = captured_run[0]["settings"]
    assert s.quantize == "bnb8" and s.compile
    backend = make_backend(served_checkpoint, quantize=s.quantize)
    assert type(backend.vla.language_model.model.layers[0].self_attn.q_proj).__name__ == "Linear8bitLt"
