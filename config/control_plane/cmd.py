"""``otgate control-plane serve --dir DIR --listen HOST:PORT --tokens FILE``."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("control-plane", help="a reference control plane for one site")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    serve = verbs.add_parser("serve", help="serve versioned configs from a directory")
    serve.add_argument("--dir", required=True, type=Path, help="DIR/<gateway_id>/<version>.toml")
    serve.add_argument(
        "--listen", default="127.0.0.1:8788", metavar="HOST:PORT", help="port 0 = any free port"
    )
    serve.add_argument(
        "--tokens", required=True, type=Path, help='TOML file: gateway_id = "token" per line'
    )
    serve.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import anyio

    from otgate.config.control_plane.server import TokenFileError, read_tokens, serve
    from otgate.supervisors.logs import setup_logging
    from otgate.supervisors.status_server import split_listen

    try:
        tokens = read_tokens(args.tokens)
    except TokenFileError as exc:
        print(f"otgate control-plane: {exc}", file=sys.stderr)
        return 2
    if not args.dir.is_dir():
        print(f"otgate control-plane: {args.dir}: not a directory", file=sys.stderr)
        return 2
    setup_logging(secrets=tokens.values())
    host, port = split_listen(args.listen)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, args.dir, tokens, host, port)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

    anyio.run(main)
    return 0
