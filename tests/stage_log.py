"""Helpers for the stage actor tests: an embedded log with every topic, polling, reading back."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from otgate.actors.log.base import TopicSpec
from otgate.actors.log.embedded import EmbeddedLog

TOPICS = [
    "telemetry.raw", "events.raw", "telemetry.clean", "events.clean", "telemetry.1s",
    "telemetry.1min", "telemetry.1h", "dlq.telemetry", "dlq.events", "alarms.raw",
    "alarms.clean", "alarms.commands", "logs.gateway",
]


async def open_log(tmp: Path, partitions: int = 1) -> EmbeddedLog:
    lg = EmbeddedLog(tmp / "log.sqlite")
    await lg.start()
    await lg.ensure_topics([TopicSpec(name=t, partitions=partitions) for t in TOPICS])
    return lg


async def read_all(lg: EmbeddedLog, codec: Any, topic: str) -> list[Any]:
    """Every record of a topic (a throw-away group that never commits)."""
    c = lg.consumer(f"reader-{time.monotonic_ns()}", [topic])
    out = []
    try:
        while recs := await c.fetch(10_000, 0.05):
            out += [codec.decode(topic, r.value) for r in recs]
    finally:
        await c.close()
    return out


async def wait_until(cond: Callable[[], Awaitable[bool]], deadline_s: float = 10.0) -> None:
    """Poll an async condition until it holds or the deadline passes (then fail).

    Polling is the point here: the condition is state in another process or
    file (the log, the database), which no in-process event can signal.
    """
    with anyio.fail_after(deadline_s):
        while not await cond():
            await anyio.sleep(0.02)
