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
    p.add_argument("--request-timeout", type=float, default=60.0, help="seconds before a request gets 504")
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

    for name in ("max_batch_size", "max_queue", "port"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("batch_window_ms", "max_body_mb", "request_timeout"):
        if getattr(args, name) < 0 or (name != "batch_window_ms" and getattr(args, name) == 0):
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    settings = ServeSettings(
        unnorm_key=args.unnorm_key,
        api_key=args.api_key or api_key_from_env(),
        max_batch_size=args.max_batch_size,
        batch_window_ms=args.batch_window_ms,
        max_queue=args.max_queue,
        max_body_mb=args.max_body_mb,
        request_timeout_s=args.request_timeout,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        quantize=args.quantize,
    )
    checkpoint = resolve_path(args.checkpoint)
    return run(checkpoint, settings, host=args.host, port=args.port, log_level=args.log_level)
