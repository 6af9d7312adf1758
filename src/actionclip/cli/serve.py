"""``actionclip serve``: its options, and the handler that loads the model and runs uvicorn."""

from __future__ import annotations

import sys

from actionclip.cli.model_options import add_build_options, add_model_source, labels_from_args, load_model_from_args, warn_if_random
from actionclip.cli.options import check_minimums


def add_commands(sub) -> None:
    serve = sub.add_parser("serve", help="an HTTP API and a web page to classify videos with your own labels")
    add_model_source(serve)
    add_build_options(serve)
    serve.add_argument("--frames", type=int, help="frames per clip of a model built with --model or from an official .pt (default: 8)")
    labels = serve.add_mutually_exclusive_group()
    labels.add_argument("--labels", help="the default label set, comma-separated (requests may give their own)")
    labels.add_argument("--labels-file", help="the default label set, one label per line")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    serve.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    serve.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="as for predict (default: auto)")
    serve.add_argument("--views", default="1x1", help="default CLIPSxCROPS of a request (default: 1x1)")
    serve.add_argument(
        "--max-upload-mb", type=float, default=200, help="largest request body, its videos together (default: 200; at most 100000)"
    )
    serve.add_argument("--max-batch", type=int, default=8, help="videos through the model at once, across requests (default: 8)")
    serve.add_argument("--max-wait-ms", type=float, default=20, help="how long a batch waits for more videos (default: 20; at most 10000)")
    serve.add_argument("--workers", type=int, default=2, help="decoding worker processes (default: 2; 0: a thread)")
    serve.add_argument("--decode-short-side", type=int, help="scale larger frames down to this short side while decoding")
    serve.add_argument(
        "--api-key",
        help="require this key (header X-API-Key or Authorization: Bearer) on every API call "
        "(default: env ACTIONCLIP_API_KEY if set, else none)",
    )
    serve.add_argument(
        "--cors",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages of ORIGIN (https://app.example.com, or * for any) call the API from a browser; repeat for several "
        "(default: none: browser requests from other origins are refused)",
    )
    serve.set_defaults(handler=serve_command)


def serve_command(args) -> int:
    import os

    from actionclip.host.devices import resolve_precision
    from actionclip.host.distributed import parse_device

    try:
        import uvicorn

        from actionclip.serve.app import API_KEY_ENV, ServeSettings, create_app
    except ImportError as error:
        raise ValueError(f"actionclip serve needs FastAPI and uvicorn ({error.name} is missing): pip install 'actionclip[serve]'") from None
    check_minimums(args, {"--frames": 1, "--port": 0, "--decode-short-side": 1})
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    device = parse_device(args.device, "--device")
    settings = ServeSettings(  # checked before the model loads
        default_labels=labels_from_args(args),
        views=args.views,
        max_upload_mb=args.max_upload_mb,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        api_key=api_key,
        workers=args.workers,
        decode_short_side=args.decode_short_side,
        precision=resolve_precision(args.precision, device),
        cors=args.cors,
    )
    warn_if_random(args)
    app = create_app(load_model_from_args(args, device), settings)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {args.host}: other machines can reach this server" + ("" if settings.api_key else " (no --api-key)"),
            file=sys.stderr,
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
