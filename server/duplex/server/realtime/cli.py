"""``agent realtime-server``: an OpenAI Realtime endpoint over the offline cascade or vLLM."""

from __future__ import annotations

import argparse
import os

from duplex.agents.app import translate_bind_errors
from duplex.agents.cli import Subparsers
from duplex.agents.loop import run as run_loop

from .app import RealtimeServer, ServerOptions, serve
from .backends import FLAG_ENV, cascade_backend
from .connection import ConnectionOptions

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "realtime-server",
        help="serve the OpenAI Realtime API (WebSocket /v1/realtime) over a local cascade",
        description="Any OpenAI Realtime client (openai SDK, livekit-agents, pipecat, duplex) "
        "talks to a self-hosted speech-to-text + LLM + speech stack by changing base_url. "
        "Default stack: offline (Whisper + DUPLEX_LLM_URL or the echo stand-in + Piper); "
        "with --vllm-url (or DUPLEX_VLLM_URL): vLLM realtime STT + chat + speech endpoint.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any)")
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="accept this bearer key (repeat for several; also DUPLEX_REALTIME_API_KEYS, "
        "comma-separated); without any, no key is needed",
    )
    parser.add_argument(
        "--backend", default=None, help="offline or vllm (default: vllm if DUPLEX_VLLM_URL is set)"
    )
    for flag, env in FLAG_ENV.items():
        parser.add_argument("--" + flag.replace("_", "-"), default=None, help=f"(env {env})")
    parser.add_argument("--model", default="duplex-cascade", help="model name sessions report")
    parser.add_argument("--instructions", default=None, help="default session instructions")
    parser.add_argument("--max-connections", type=int, default=100)
    parser.add_argument(
        "--max-message-mb", type=float, default=16.0, help="largest WebSocket message (MiB)"
    )
    parser.set_defaults(run=run)


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    keys = list(args.api_key)
    keys += [
        k.strip() for k in os.environ.get("DUPLEX_REALTIME_API_KEYS", "").split(",") if k.strip()
    ]
    conn = ConnectionOptions(model=args.model)
    if args.instructions:
        conn = ConnectionOptions(model=args.model, instructions=args.instructions)
    return ServerOptions(
        host=args.host,
        port=args.port,
        api_keys=tuple(keys),
        max_connections=args.max_connections,
        max_message_bytes=int(args.max_message_mb * 1024 * 1024),
        connection=conn,
    )


def run(args: argparse.Namespace) -> int:
    settings = {flag: getattr(args, flag) for flag in FLAG_ENV}
    backend = cascade_backend(args.backend, settings=settings)
    options = options_from_args(args)

    def ready(server: RealtimeServer) -> None:
        auth = f"{len(options.api_keys)} key(s)" if options.api_keys else "no key needed"
        print(f"duplex realtime server: ws://{options.host}:{server.port}/v1/realtime", flush=True)
        print(f"  OpenAI base_url={server.url} ({auth}); Ctrl+C to stop", flush=True)

    with translate_bind_errors(options.host, options.port):
        run_loop(serve(backend, options, on_ready=ready))
    return 0
