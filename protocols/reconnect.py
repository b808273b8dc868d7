"""What device sessions share when a connection fails: which error decides, and
the jittered pause before the next attempt."""

from __future__ import annotations

import logging
from collections.abc import Callable

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


def deciding_error(
    exc: BaseException, is_retriable: Callable[[BaseException], bool]
) -> BaseException:
    """The error that decides what a session does next, out of (nested) exception
    groups: a lost connection usually fails two tasks at once (watchdog and
    reader); the first non-retriable leaf wins, else the first leaf."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [deciding_error(e, is_retriable) for e in exc.exceptions]
    for leaf in leaves:
        if not is_retriable(leaf):
            return leaf
    return leaves[0]
