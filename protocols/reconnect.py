"""The pause before a device session reconnects: exponential, jittered, logged."""

from __future__ import annotations

import logging

import anyio

from otgate.supervisors.intensity import backoff_delay

log = logging.getLogger("otgate.protocols")


async def wait_before_reconnect(
    adapter_id: str, attempt: int, min_s: float, max_s: float, error: str | None
) -> None:
    """Sleep ``min_s * 2**(attempt-1)`` capped at ``max_s``, minus up to half
    (jitter), so sessions that lost one device do not reconnect in lockstep."""
    delay = backoff_delay(attempt, min_s, max_s, jitter=0.5)
    log.info(
        "adapter_reconnect_wait adapter_id=%s attempt=%d delay_s=%.2f error=%s",
        adapter_id,
        attempt,
        delay,
        error,
    )
    await anyio.sleep(delay)
