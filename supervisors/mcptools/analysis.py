"""Analysis the MCP tools compute from what the gateway reports: pure functions
over the ``/health`` document, the alarm table and dead letters (no I/O).

``diagnose`` answers "what is broken, since when, and why probably": every
component that is not RUNNING, restarted, reported an error, lags, is
backed up or has an open breaker, most serious first, with the likely cause
read from its state, restarts, last error, heartbeat, mailbox and lag.
``dlq_patterns`` groups dead letters by reason, stage and asset/parameter.
"""

from __future__ import annotations

import collections
import datetime as dt
import re
from collections.abc import Iterator, Sequence
from typing import Any

LAG_RECORDS = 1_000.0
"""A sink further behind than this many records is reported as lagging."""
MAILBOX_FULL = 0.8
"""A mailbox this full (fraction of its bound) is reported as backed up."""
HEARTBEAT_LATE_S = 5.0
BREAKER_OPEN = 2.0
_RANK = {"FAILED": 0, "RESTARTING": 1, "STOPPED": 2, "DEGRADED": 3, "STARTING": 4}
_UNREACHABLE = re.compile(
    r"connect|refused|unreachable|timed? ?out|timeout|reset by peer|no route|broken pipe", re.I
)


def walk(nodes: Sequence[dict], path: str = "") -> Iterator[tuple[str, dict]]:
    """Every node of a ``/health`` component tree with its path (``a/a.session``)."""
    for node in nodes:
        here = f"{path}/{node['id']}" if path else node["id"]
        yield here, node
        yield from walk(node.get("children") or [], here)


def _cause(node: dict) -> list[str]:
    """Why ``node`` is probably in trouble, most telling first."""
    state, restarts = node.get("state"), node.get("restarts", 0)
    error, metrics = node.get("last_error") or "", node.get("metrics") or {}
    causes = []
    if state == "FAILED":
        causes.append(
            f"gave up after {restarts} restarts (restart intensity exceeded); it stays "
            "FAILED until the cause is fixed and an operator restarts it or the config reloads"
        )
    elif state == "RESTARTING":
        causes.append(f"crashed and is waiting out its restart backoff ({restarts} restarts)")
    if error and _UNREACHABLE.search(error):
        causes.append(f"cannot reach its peer (device, broker or database): {error}")
    elif error:
        causes.append(f"last error: {error}")
    if state == "DEGRADED" and not error:
        causes.append("running but not doing all its work (e.g. a device is unreachable)")
    if metrics.get("breaker_state", 0.0) >= BREAKER_OPEN:
        causes.append("circuit breaker open: calls to its peer are refused until it cools down")
    lag = metrics.get("lag_records")
    if isinstance(lag, int | float) and lag == lag and lag > LAG_RECORDS:  # nan: unknown
        causes.append(f"{lag:.0f} records behind the log: the sink is slower than the input")
    size = node.get("mailbox_size") or 0
    if size and node.get("mailbox_depth", 0) >= MAILBOX_FULL * size:
        causes.append(f"mailbox {node['mailbox_depth']}/{size}: backed up (backpressure)")
    beat = node.get("heartbeat_age_s")
    if beat is not None and beat > HEARTBEAT_LATE_S:
        causes.append(f"no heartbeat for {beat:.1f} s: the process may be hung")
    if restarts and not causes:
        causes.append(f"restarted {restarts} times; running again now")
    return causes


def diagnose(health: dict[str, Any], alarms: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """What is broken in the gateway that ``health`` (``/health``) describes,
    since when, and the likely cause; with the active alarms (see module doc)."""
    now = health.get("time")
    findings = []
    for path, node in walk(health.get("components") or []):
        at = node.get("last_error_at")
        age = round(now - at, 1) if now is not None and at is not None else None
        causes = _cause(node)
        if not causes and node.get("state") == "RUNNING":
            continue
        findings.append(
            {
                "component": path,
                "kind": node.get("kind", ""),
                "state": node.get("state"),
                "restarts": node.get("restarts", 0),
                "last_error": node.get("last_error"),
                "last_error_at": _iso(at),
                "last_error_age_s": age,
                "likely_cause": causes or [f"state {node.get('state')}"],
            }
        )
    findings.sort(key=lambda f: (_RANK.get(f["state"], 9), -f["restarts"], f["component"]))
    active = [a for a in alarms if a.get("active") or not a.get("acked", True)]
    by_severity = collections.Counter(str(a.get("severity", "")) for a in active)
    status = health.get("status", "UNKNOWN")
    if findings:
        worst = findings[0]
        summary = (
            f"{status}: {len(findings)} component(s) need attention; worst "
            f"{worst['component']} ({worst['state']}): {worst['likely_cause'][0]}"
        )
    else:
        summary = f"{status}: every component is running"
    if active:
        summary += f"; {len(active)} alarm(s) active or unacknowledged"
    return {
        "status": status,
        "summary": summary,
        "findings": findings,
        "alarms": {"active_or_unacked": len(active), "by_severity": dict(by_severity)},
    }


def _iso(unix_s: float | None) -> str | None:
    if unix_s is None:
        return None
    return dt.datetime.fromtimestamp(unix_s, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reason_kind(reason: str) -> str:
    """``out_of_range [None, 18.0]`` → ``out_of_range``: the reason without its details."""
    return re.split(r"[\s:(\[]", reason.strip(), maxsplit=1)[0] or "(none)"


def dlq_patterns(letters: Sequence[dict[str, Any]], top: int = 10) -> dict[str, Any]:
    """Dead letters (``/dlq`` views) grouped by reason kind, stage and
    asset/parameter, most frequent first, with the time span of each group."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for view in letters:
        letter = view.get("letter") or {}
        reading = letter.get("reading") or {}
        key = (
            _reason_kind(letter.get("reason", "")),
            letter.get("stage", ""),
            f"{reading.get('asset_id', '?')}/{reading.get('parameter', '?')}",
        )
        t = letter.get("gateway_time")
        g = groups.setdefault(
            key,
            {"count": 0, "first": t, "last": t, "example": letter.get("reason", ""), "states": {}},
        )
        g["count"] += 1
        if t is not None:
            g["first"] = min(g["first"] or t, t)
            g["last"] = max(g["last"] or t, t)
        state = str(view.get("disposition", "PENDING"))
        g["states"][state] = g["states"].get(state, 0) + 1
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1]["count"], kv[0]))
    return {
        "letters": len(letters),
        "patterns": [
            {
                "reason": reason,
                "stage": stage,
                "point": point,
                "count": g["count"],
                "first_gateway_time": g["first"],
                "last_gateway_time": g["last"],
                "example": g["example"],
                "dispositions": g["states"],
            }
            for (reason, stage, point), g in ordered[:top]
        ],
        "more_patterns": max(0, len(ordered) - top),
    }
