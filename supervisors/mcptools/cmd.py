"""``otgate mcp``: serve the MCP tools for an assistant, over stdio (default: the
assistant's host starts this command) or streamable HTTP on a loopback port
(``--http 127.0.0.1:PORT``; port 0 picks one, printed on stderr).

Over stdio the tools act with the token given here (``$OTGATE_TOKEN``,
``--token-file`` or ``--token``) against the gateway at ``--url``: give the
assistant a token with the role it should have (a viewer token: reads and
previews only). Over HTTP the server holds no token: each MCP client sends
its own gateway token (``Authorization: Bearer``) with every request.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys

import anyio

from otgate.supervisors.api_client import add_token_args, add_url_arg, token
from otgate.supervisors.mcptools.confirm import DEFAULT_TTL_S

log = logging.getLogger("otgate.mcp")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mcp",
        help="serve the MCP tools (stdio, or --http on loopback)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url_arg(p, "gateway status endpoint")
    add_token_args(p)
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve streamable HTTP at http://HOST:PORT/mcp (loopback only) instead of stdio",
    )
    p.add_argument(
        "--confirm",
        choices=("person", "token"),
        default="person",
        help="person (default): a confirmed action also asks the person through the "
        "MCP client (elicitation); token: the confirmation token alone suffices",
    )
    p.add_argument(
        "--confirm-ttl",
        type=float,
        default=DEFAULT_TTL_S,
        help=f"seconds a confirmation token stays valid (default {DEFAULT_TTL_S:g})",
    )
    p.set_defaults(func=run)


def _loopback(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
        raise ValueError("only a loopback address is allowed")
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    try:
        import mcp  # noqa: F401
    except ImportError:
        print("otgate mcp: the mcp package is missing: pip install 'otgate[mcp]'", file=sys.stderr)
        return 2
    if not args.confirm_ttl > 0:
        print("otgate mcp: --confirm-ttl: expected a positive number of seconds", file=sys.stderr)
        return 2
    tok, listen = token(args), None
    if args.http:
        try:
            listen = _loopback(args.http)
        except (ValueError, OSError) as exc:  # not a number, an unknown name
            print(f"otgate mcp: --http {args.http}: {exc}", file=sys.stderr)
            return 2
        tok = None  # each HTTP client sends its own
    elif not tok:
        print("otgate mcp: a token is required ($OTGATE_TOKEN, --token-file)", file=sys.stderr)
        return 3
    try:
        anyio.run(serve, args.url, tok, listen, args.confirm_ttl, args.confirm == "person")
    except KeyboardInterrupt:
        pass
    return 0


async def serve(
    url: str, tok: str | None, listen: tuple[str, int] | None, ttl_s: float, ask_person: bool
) -> None:
    """Serve until stdin closes (stdio) or the process is stopped (HTTP)."""
    from otgate.supervisors.mcptools.confirm import Confirmations
    from otgate.supervisors.mcptools.gateway_api import GatewayApi
    from otgate.supervisors.mcptools.server import build

    async with GatewayApi(url) as api:
        book = Confirmations(ttl_s=ttl_s)
        if listen is None:
            await build(api, book, tok, ask_person).run_stdio_async()
            return
        await _serve_http(build(api, book, tok, ask_person), *listen)


async def _serve_http(server, host: str, port: int) -> None:
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    # Host/Origin checked on every request: a web page cannot reach it by DNS rebinding.
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{shown}:*", "localhost:*"],
        allowed_origins=[f"http://{shown}:*", "http://localhost:*"],
    )
    app = server.streamable_http_app(host=host, transport_security=security)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    log.warning("mcp_listening url=http://%s:%d/mcp", shown, bound[1])
    await uvicorn.Server(config).serve(sockets=[sock])
