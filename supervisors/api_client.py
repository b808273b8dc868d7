"""What every operator CLI command shares: talking to the running gateway's
status endpoint with a token, and printing a table (or ``--json``).

The CLI is a face of the gateway's operator services: it never touches the
log itself, so the gateway checks the token's role and writes the audit
(``X-Otgate-Surface: cli`` marks where the call came from). The token comes
from ``--token``, ``--token-file`` or ``$OTGATE_TOKEN`` (prefer the last two:
a token on the command line shows in ``ps``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8787"


class ApiError(Exception):
    """The endpoint answered with an error status (``status``) or could not be
    reached (``status`` 0)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def add_url_arg(p: argparse.ArgumentParser, what: str = "status endpoint") -> None:
    """``--url`` of the gateway's status endpoint (default ``$OTGATE_STATUS_URL``)."""
    p.add_argument(
        "--url",
        default=os.environ.get("OTGATE_STATUS_URL", DEFAULT_URL),
        help=f"{what} (default $OTGATE_STATUS_URL or {DEFAULT_URL})",
    )


def add_token_args(p: argparse.ArgumentParser) -> None:
    """``--token`` and ``--token-file`` (read by ``token``; else ``$OTGATE_TOKEN``)."""
    p.add_argument("--token", help="bearer token (visible in ps; prefer $OTGATE_TOKEN)")
    p.add_argument(
        "--token-file",
        type=Path,
        help="file holding the bearer token (default: $OTGATE_TOKEN)",
    )


def add_endpoint_args(p: argparse.ArgumentParser, *, timeout: bool = True) -> None:
    """``--url``, ``--token``, ``--token-file``, ``--timeout`` and ``--json`` for a
    command that calls the endpoint (``timeout=False``: the command has its own)."""
    add_url_arg(p)
    add_token_args(p)
    if timeout:
        p.add_argument(
            "--timeout",
            type=float,
            default=60.0,
            help="seconds to wait for the answer (default 60)",
        )
    p.add_argument("--json", action="store_true", help="print the answer as JSON")


def token(args: argparse.Namespace) -> str:
    if args.token:
        return args.token
    if args.token_file is not None:
        return args.token_file.read_text().strip()
    return os.environ.get("OTGATE_TOKEN", "")


def call(
    args: argparse.Namespace,
    method: str,
    path: str,
    *,
    query: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    timeout: float | None = None,
) -> tuple[int, Any]:
    """``(status, decoded JSON)`` of one call (waiting ``timeout`` seconds, default
    ``--timeout``); raises ApiError for 4xx/5xx or when the endpoint cannot be reached."""
    url = args.url.rstrip("/") + path
    if query:
        url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v not in (None, "")})
    headers = {"X-Otgate-Surface": "cli", "Accept": "application/json"}
    if tok := token(args):
        headers["Authorization"] = f"Bearer {tok}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        wait = args.timeout if timeout is None else timeout
        with urllib.request.urlopen(req, timeout=wait) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise ApiError(exc.code, exc.read().decode(errors="replace").strip()) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(0, f"cannot reach {args.url}: {exc}") from None


def run_call(
    args: argparse.Namespace,
    command: str,
    method: str,
    path: str,
    show: Callable[[Any], object],
    *,
    query: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    exit_code: Callable[[Any], int] = lambda doc: 0,
) -> int:
    """``otgate COMMAND`` as one call: prints the answer (``--json`` as JSON,
    otherwise through ``show``) or the error; returns the exit code (``exit_code``
    of the answer when the call went through, e.g. 1 for an action refused)."""
    try:
        _, doc = call(args, method, path, query=query, body=body)
    except ApiError as exc:
        return report_error(command, exc)
    if args.json:
        print_json(doc)
    else:
        show(doc)
    return exit_code(doc)


def report_error(command: str, exc: ApiError) -> int:
    """Print ``exc`` for a person; the exit code: 2 unreachable, 3 no valid
    token / role too weak, 1 anything else."""
    print(
        f"otgate {command}: {exc}" + (f" (HTTP {exc.status})" if exc.status else ""),
        file=sys.stderr,
    )
    if exc.status == 0:
        return 2
    return 3 if exc.status in (401, 403) else 1


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str))


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], *, width: int = 48) -> str:
    """Left-aligned columns, each at most ``width`` characters."""
    cells = [[("" if v is None else str(v))[:width] for v in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), *(fmt.format(*r).rstrip() for r in cells)])


def iso(ns: int | None) -> str:
    """UTC time to the second for people (``--json`` keeps the integer ns)."""
    if ns is None:
        return ""
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
