"""What the status and write tools read from the gateway for one caller."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

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


WRITE_WAIT_S = 20.0
"""How long ``write_point`` waits for the device's answer before it returns the
request as it stands (``device_shadow`` then shows what became of it)."""


def _point_path(asset: str, parameter: str) -> str:
    return f"/points/{quote(asset, safe='')}/{quote(parameter, safe='')}"


async def shadow(api: CallerApi, asset: str) -> dict[str, Any]:
    """The asset's shadow (``GET /assets/{asset}/shadow``)."""
    return await api.get(f"/assets/{quote(asset, safe='')}/shadow")


async def write_preview(api: CallerApi, asset: str, parameter: str, value: Any) -> dict[str, Any]:
    """What a person confirming a write wants to see: the point's limits and role,
    whether the caller may write it, and its reported and desired value now."""
    points = (await api.get("/points/writable"))["points"]
    point = next(
        (p for p in points if (p["asset_id"], p["parameter"]) == (asset, parameter)), None
    )
    if point is None:
        raise ApiError(404, f"{asset}/{parameter} is not a writable point of your assets")
    doc = await shadow(api, asset)
    return {
        "point": f"{asset}/{parameter}",
        "write": value,
        "limits": {k: point[k] for k in ("min", "max", "allowed", "role")},
        "can_write": point["can_write"],
        "reported": doc["reported"].get(parameter),
        "desired": doc["desired"].get(parameter),
    }


async def write(api: CallerApi, asset: str, parameter: str, value: Any) -> dict[str, Any]:
    """``POST /points/{asset}/{parameter}/write``, waiting for the device's answer."""
    body = {"value": value, "wait_s": WRITE_WAIT_S}
    return await api.post(_point_path(asset, parameter) + "/write", body)
