"""``otgate status [--url URL] [--json]``: the supervision tree for a person."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from otgate.supervisors.api_client import add_url_arg

_MARK = {"RUNNING": "ok", "DEGRADED": "!!", "RESTARTING": "..", "STARTING": "..", "FAILED": "XX"}
RECOVERED_AFTER_S = 10.0
"""A RUNNING component's error at least this old is history: it has recovered
(a session retrying every second keeps its error younger than this)."""
MIN_ERROR_WIDTH = 30
_DIM, _RESET = "\033[2m", "\033[0m"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the running gateway's supervision tree")
    add_url_arg(p)
    p.add_argument("--json", action="store_true", help="print /health as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        with urllib.request.urlopen(args.url.rstrip("/") + "/health", timeout=5) as resp:
            doc = json.load(resp)
    except (urllib.error.URLError, OSError) as exc:
        print(f"otgate status: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        tty = sys.stdout.isatty()
        # A terminal shows as much of LAST ERROR as its width allows; a pipe gets it whole.
        width = shutil.get_terminal_size().columns if tty or "COLUMNS" in os.environ else None
        print(render(doc, width=width, color=tty and "NO_COLOR" not in os.environ))
    return 0 if doc["status"] in ("HEALTHY", "DEGRADED") else 1


def render(doc: dict[str, Any], *, width: int | None = None, color: bool = False) -> str:
    """The tree as a table. LAST ERROR shows how long ago the error happened;
    on a component that has been RUNNING since (``RECOVERED_AFTER_S`` or more
    ago) it says ``recovered`` and is greyed on a colour terminal. ``width``
    cuts LAST ERROR at a word boundary to fit that many columns (None: whole)."""
    now = doc.get("time") or time.time()
    rows: list[list[str]] = []
    errors: list[tuple[str, bool]] = []

    def add(node: dict[str, Any], depth: int) -> None:
        m = node.get("metrics", {})
        beat = node.get("heartbeat_age_s")
        rate = m.get("readings_published") or m.get("consumed_total")
        rows.append(
            [
                f"{_MARK.get(node['state'], '  ')} " + "  " * depth + node["id"],
                node["kind"],
                node["state"],
                str(node.get("pid") or "-"),
                str(node.get("restarts", 0)),
                f"{beat:.1f}s" if beat is not None else "",
                f"{m['rss_bytes'] / 2**20:.0f}MiB" if "rss_bytes" in m else "",
                f"{rate:,.0f}" if rate else "",
            ]
        )
        errors.append(_last_error(node, now))
        for child in node.get("children", []):
            add(child, depth + 1)

    for comp in doc["components"]:
        add(comp, 0)
    head = ["COMPONENT", "KIND", "STATE", "PID", "RESTARTS", "BEAT", "RSS", "RECORDS"]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    room = None if width is None else max(MIN_ERROR_WIDTH, width - sum(widths) - 2 * len(widths))
    up = doc.get("uptime_s", 0)
    lines = [
        f"gateway {doc['gateway']}: {doc['status']}  (up {int(up // 3600)}h{int(up % 3600 // 60):02d}m"
        f"{int(up % 60):02d}s)",
        fmt.format(*head, "LAST ERROR"),
    ]
    for row, (text, recovered) in zip(rows, errors, strict=True):
        text = _cut(text, room)
        if text and recovered and color:
            text = f"{_DIM}{text}{_RESET}"
        lines.append(fmt.format(*row, text).rstrip())
    return "\n".join(lines)


def _last_error(node: dict[str, Any], now: float) -> tuple[str, bool]:
    """(text, recovered): ``4m12s ago: error``, or ``… ago (recovered): error``."""
    error = node.get("last_error")
    if not error:
        return "", False
    at = node.get("last_error_at")
    if at is None:
        return error, False
    age = max(0.0, now - at)
    recovered = node["state"] == "RUNNING" and age >= RECOVERED_AFTER_S
    return f"{_age(age)} ago{' (recovered)' if recovered else ''}: {error}", recovered


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _cut(text: str, room: int | None) -> str:
    """``text`` within ``room`` characters, cut at a word boundary with ``…``."""
    if room is None or len(text) <= room:
        return text
    cut = text[: room - 1]
    space = cut.rfind(" ")
    if space > room // 2:
        cut = cut[:space]
    return cut.rstrip(" ,:;") + "…"
