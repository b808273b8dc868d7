"""What the status tools read from ``/health`` and ``/metrics`` for one caller."""

from __future__ import annotations

from typing import Any

from otgate.supervisors.api_client import ApiError
from otgate.supervisors.mcptools.analysis import walk
from otgate.supervisors.mcptools.gateway_api import CallerApi


async def status(api: CallerApi) -> dict[str, Any]:
    """The roll-up with one line per bulkhead instead of the whole tree."""
    h = await api.get("/health")
    h["bulkheads"] = [
        {k: b.get(k) for k in ("id", "kind", "state", "restarts", "last_error")}
        for b in h.pop("components", [])
    ]
    return h


async def component(api: CallerApi, component: str) -> dict[str, Any]:
    """One component (by id or path) and its subtree; ApiError 404 when unknown."""
    health = await api.get("/health")
    nodes = list(walk(health.get("components") or []))
    for path, node in nodes:
        if component in (path, node["id"]):
            return {"path": path, "gateway_time": health.get("time"), **node}
    known = ", ".join(p for p, _n in nodes[:40])
    raise ApiError(404, f"no component {component!r} (have {known})")


async def sinks(api: CallerApi) -> list[dict[str, Any]]:
    """Every sink's state, lag, connection, breaker and last error."""
    health = await api.get("/health")
    out = []
    for path, node in walk(health.get("components") or []):
        if not str(node.get("kind", "")).startswith("sink."):
            continue
        m = node.get("metrics") or {}
        out.append(
            {
                "sink": path,
                "kind": node["kind"],
                "state": node.get("state"),
                "lag_records": m.get("lag_records"),
                "connected": m.get("connected"),
                "breaker_state": m.get("breaker_state"),
                "restarts": node.get("restarts", 0),
                "last_error": node.get("last_error"),
            }
        )
    return out


async def metrics(api: CallerApi, prefix: str, limit: int) -> list[str]:
    """Prometheus samples whose name starts with ``prefix`` (no HELP/TYPE lines)."""
    text = await api.text("/metrics")
    lines = [ln for ln in text.splitlines() if ln.startswith(prefix) and not ln.startswith("#")]
    return lines[:limit]
