"""``otgate status [--url URL] [--json]``: the supervision tree for a person."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8787"
_MARK = {"RUNNING": "ok", "DEGRADED": "!!", "RESTARTING": "..", "STARTING": "..", "FAILED": "XX"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the running gateway's supervision tree")
    p.add_argument(
        "--url",
        default=os.environ.get("OTGATE_STATUS_URL", DEFAULT_URL),
        help=f"status endpoint (default $OTGATE_STATUS_URL or {DEFAULT_URL})",
    )
    p.add_argument("--json", action="store_true", help="print /health as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        with urllib.request.urlopen(args.url.rstrip("/") + "/health", timeout=5) as resp:
            doc = json.load(resp)
    except (urllib.error.URLError, OSError) as exc:
        print(f"otgate status: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=2) if args.json else render(doc))
    return 0 if doc["status"] in ("HEALTHY", "DEGRADED") else 1


def render(doc: dict[str, Any]) -> str:
    rows: list[list[str]] = []

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
                (node.get("last_error") or "")[:60],
            ]
        )
        for child in node.get("children", []):
            add(child, depth + 1)

    for comp in doc["components"]:
        add(comp, 0)
    head = [
        "COMPONENT",
        "KIND",
        "STATE",
        "PID",
        "RESTARTS",
        "BEAT",
        "RSS",
        "RECORDS",
        "LAST ERROR",
    ]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)
    ]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    up = doc.get("uptime_s", 0)
    lines = [
        f"gateway {doc['gateway']}: {doc['status']}  (up {int(up // 3600)}h{int(up % 3600 // 60):02d}m"
        f"{int(up % 60):02d}s)",
        fmt.format(*head),
    ]
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(lines)
