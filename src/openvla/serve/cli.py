"""`openvla serve`: serve a checkpoint over HTTP (POST /act, GET /healthz, GET /metadata)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a policy to robots over HTTP, with dynamic batching")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (ours or the OpenVLA layout)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1: this machine only); 0.0.0.0 = all")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--unnorm-key", default=None, help="dataset statistics used when a request names none")
    p.add_argument("--api-key", default=None,
                   help="require this key on /act and /metadata (default: $OPENVLA_API_KEY; unset = no key)")
    p.add_argument("--max-batch-size", type=int, default=8,
                   help="largest batch per forward pass (1 = no batching)")
    p.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="how long to wait for more requests after the first of a batch")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests beyond this get 503")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="larger request bodies get 413")
    p.add_argument("--max-queued-mb", type=float, default=256.0,
                   help="memory that bodies and decoded inputs of requests in flight may hold; beyond it 503")
    p.add_argument("--request-timeout", type=float, default=None,
                   help="seconds before a request gets 504 (default: 60, or 2 x max-batch-size x the warm-up "
                        "prediction's time when that is longer)")
    p.add_argument("--body-timeout", type=float, default=10.0,
                   help="seconds a client has to send the whole body; slower ones get 408")
    p.add_argument("--shutdown-drain", type=float, default=5.0,
                   help="on SIGTERM/Ctrl+C, queued requests still start for this many seconds; later ones get 503")
    p.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (default: as loaded)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--quantize", choices=("int8", "bnb8", "bnb4"), default=None,
                   help="quantise the language model: int8 dynamic (CPU) or bitsandbytes 8/4-bit (quant extra)")
    p.add_argument("--compile", action="store_true",
                   help="run the model through torch.compile (compiled during warm-up, before serving)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    from openvla.checkpoint import resolve_path
    from openvla.serve.server import ServeSettings, api_key_from_env, run
    from openvla.threads import set_threads

    set_threads()

    for name in ("max_batch_size", "max_queue", "port"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("batch_window_ms", "max_body_mb", "max_queued_mb", "request_timeout", "body_timeout",
                 "shutdown_drain"):
        value = getattr(args, name)
        if value is not None and (value < 0 or (value == 0 and name not in ("batch_window_ms", "shutdown_drain"))):
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    settings = ServeSettings(
        unnorm_key=args.unnorm_key,
        api_key=args.api_key or api_key_from_env(),
        max_batch_size=args.max_batch_size,
        batch_window_ms=args.batch_window_ms,
        max_queue=args.max_queue,
        max_body_mb=args.max_body_mb,
        max_queued_mb=args.max_queued_mb,
        request_timeout_s=args.request_timeout,
        body_timeout_s=args.body_timeout,
        shutdown_drain_s=args.shutdown_drain,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        quantize=args.quantize,
    )
    checkpoint = resolve_path(args.checkpoint)
    return run(checkpoint, settings, host=args.host, port=args.port, log_level=args.log_level)
