"""`pocketlm serve MODEL`: an OpenAI-compatible server and a web page for one model.

    pocketlm serve MODEL [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--n-ctx N]
                         [--queue-size N] [--max-body-mb MB]
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path

from pocketlm.errors import UserError
from pocketlm.intent.infer import load_runner
from pocketlm.serve.server import create_app


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="OpenAI-compatible server + web page (chat, documents, intents)",
        description="Serve one model over HTTP: /v1/models, /v1/chat/completions (streaming, tools -> DroidCall "
                    "tool_calls), /v1/completions, /v1/intent, /v1/documents, and a web page at /. A .gguf file "
                    "runs on llama.cpp, a checkpoint directory on PyTorch. Requests run one at a time; a full "
                    "queue answers 503 with Retry-After.")
    p.add_argument("model", help="checkpoint directory or .gguf file")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default loopback; any other address needs --api-key)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None,
                   help="require `Authorization: Bearer KEY` on every /v1 route")
    p.add_argument("--n-ctx", type=int, default=None,
                   help="context length in tokens (default: the model's maximum); max_tokens is capped to it")
    p.add_argument("--queue-size", type=int, default=16,
                   help="requests that may wait behind the running one before 503 (default 16)")
    p.add_argument("--max-body-mb", type=float, default=8.0,
                   help="largest request body, uploads included, in MB (default 8); larger gets 413")
    p.set_defaults(func=_cmd_serve)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is one clear error (uvicorn would exit 1)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"--host {host}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def _cmd_serve(args) -> int:
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    if args.queue_size < 0:
        raise UserError(f"--queue-size must be >= 0, got {args.queue_size}")
    if args.max_body_mb <= 0:
        raise UserError(f"--max-body-mb must be > 0, got {args.max_body_mb}")
    if args.n_ctx is not None and args.n_ctx < 2:
        raise UserError(f"--n-ctx must be >= 2, got {args.n_ctx}")
    if args.api_key is not None and not args.api_key.strip():
        raise UserError("--api-key is empty")
    if not is_loopback(args.host):
        if args.api_key is None:
            raise UserError(f"--host {args.host} is reachable from other machines; also pass --api-key KEY "
                            "(clients send it as `Authorization: Bearer KEY`)")
        print(f"pocketlm serve: warning: listening on {args.host}, reachable from other machines; "
              "every /v1 route requires the API key", file=sys.stderr)
    if not Path(args.model).exists():
        raise UserError(f"model not found: {args.model}")
    sock = _bind(args.host, args.port)
    try:
        import uvicorn

        runner = load_runner(args.model, "auto", None, args.n_ctx)
        name = Path(args.model).resolve().name
        app = create_app(runner, name, api_key=args.api_key, queue_size=args.queue_size,
                         max_body_bytes=int(args.max_body_mb * (1 << 20)))
        port = sock.getsockname()[1]
        print(f"pocketlm serve: {name} ({runner.backend}, context {app.state.served.context_limit()}) on "
              f"http://{args.host}:{port}/  (OpenAI base URL http://{args.host}:{port}/v1)", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=5))
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
