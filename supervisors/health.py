"""Roll the supervision tree up into one gateway status, and render it as JSON."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgspec

from otgate.actors.messages import Snapshot, State

HEALTHY, DEGRADED, UNHEALTHY, FAILED = "HEALTHY", "DEGRADED", "UNHEALTHY", "FAILED"
_UP = (State.RUNNING, State.DEGRADED)


def walk(node: Snapshot) -> Iterator[Snapshot]:
    yield node
    for child in node.children:
        yield from walk(child)


def rollup(root: Snapshot) -> str:
    """HEALTHY: everything RUNNING. DEGRADED: something is not (a session cannot
    reach its device, a bulkhead restarts or FAILED) but most bulkheads move
    data. UNHEALTHY: more than half of the bulkheads are down. FAILED: the root
    failed, or every bulkhead is FAILED."""
    if root.state is State.FAILED:
        return FAILED
    bulkheads = root.children
    if bulkheads and all(b.state is State.FAILED for b in bulkheads):
        return FAILED
    down = sum(1 for b in bulkheads if b.state not in _UP)
    if bulkheads and down * 2 > len(bulkheads):
        return UNHEALTHY
    if root.state is not State.RUNNING or any(
        n.state is not State.RUNNING for n in walk(root) if n is not root
    ):
        return DEGRADED
    return HEALTHY


def health_document(root: Snapshot, gateway_id: str, uptime_s: float) -> dict[str, Any]:
    """The ``/health`` body: status, then the whole tree under ``components``.
    ``time`` is the gateway's clock (Unix seconds): ``now - last_error_at`` is
    an error's age whatever the reader's clock says."""
    return {
        "status": rollup(root),
        "gateway": gateway_id,
        "uptime_s": round(uptime_s, 3),
        "time": round(time.time(), 3),
        "supervisor": {
            "id": root.id,
            "state": root.state.value,
            "last_error": root.last_error,
            "last_error_at": root.last_error_at,
        },
        "components": msgspec.to_builtins(root.children),
    }
