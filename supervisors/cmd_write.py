"""``otgate write ASSET PARAMETER VALUE [--wait]``: write a setpoint or a coil
through the running gateway (``POST /points/{asset}/{parameter}/write``).

The token (``--token``, ``--token-file`` or ``$OTGATE_TOKEN``; see api_client.py)
needs the point's write role.
VALUE is read as JSON when it parses (``42``, ``21.5``, ``true``) and as
text otherwise; ``--string`` always sends text. Without ``--wait`` the
request is logged and its id printed (poll ``GET /commands/{id}``); with
``--wait`` the command prints the final result. Exit codes: 0 WRITTEN,
1 any other final result or a refusal, 2 the gateway unreachable, 3 no
final result within ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from otgate.supervisors.api_client import ApiError, add_endpoint_args, call


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("write", help="write a value to a writable point of the running gateway")
    p.add_argument("asset", help="asset id")
    p.add_argument("parameter", help="parameter (a point with writable = true)")
    p.add_argument("value", help="value: JSON (42, 21.5, true) or text")
    p.add_argument("--string", action="store_true", help="send VALUE as text, never as JSON")
    p.add_argument("--wait", action="store_true", help="wait for the final result")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds --wait waits (max 60)")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds after which the gateway must not execute it (default 30)")
    p.add_argument("--request-id", default=None, help="your own request id (idempotency)")
    add_endpoint_args(p, timeout=False)
    p.set_defaults(func=run)


def parse_value(text: str, as_string: bool = False) -> Any:
    if as_string:
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, bool | int | float | str) else text


def run(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"value": parse_value(args.value, args.string)}
    if args.deadline is not None:
        body["deadline_s"] = args.deadline
    if args.request_id:
        body["request_id"] = args.request_id
    if args.wait:
        body["wait_s"] = min(args.timeout, 60.0)
    path = "/points/{}/{}/write".format(
        urllib.parse.quote(args.asset, safe=""), urllib.parse.quote(args.parameter, safe="")
    )
    try:
        _, doc = call(args, "POST", path, body=body, timeout=body.get("wait_s", 0) + 10)
    except ApiError as exc:
        if exc.status == 0:
            print(f"otgate write: {exc}", file=sys.stderr)
            return 2
        try:  # a refusal at the gateway answers its reason as JSON
            doc = json.loads(str(exc))
        except ValueError:
            print(f"otgate write: HTTP {exc.status}: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(doc, indent=2) if args.json else render(doc, args.url))
    if doc.get("status") == "WRITTEN":
        return 0
    if args.wait and not doc.get("final", True):
        return 3
    return 0 if not args.wait and doc.get("status") in ("PENDING", "ACCEPTED") else 1


def render(doc: dict[str, Any], url: str) -> str:
    status = doc.get("status", "?")
    if "request_id" not in doc:  # refused by the gateway: nothing was logged
        return f"{status}: {doc.get('detail', '')}"
    line = f"{status} {doc['asset_id']}/{doc['parameter']} = {doc['value']!r}"
    if doc.get("read_back") is not None:
        line += f" (read back {doc['read_back']!r})"
    if doc.get("code") is not None:
        line += f" code {doc['code']}"
    if doc.get("latency_ms"):
        line += f" in {doc['latency_ms']:.1f} ms"
    if doc.get("detail"):
        line += f": {doc['detail']}"
    line += f"  [request {doc['request_id']}]"
    if not doc.get("final"):
        line += f"\n  not final yet; poll {url.rstrip('/')}/commands/{doc['request_id']}"
    return line
