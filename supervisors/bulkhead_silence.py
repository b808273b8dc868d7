"""When is a silent bulkhead hung? Its heartbeats' silence, less the time it waited for a CPU.

A bulkhead's event loop sends a heartbeat every ``heartbeat_interval``; the
gateway kills it as hung once it has been silent longer than
``heartbeat_timeout``. On a loaded machine (load average 11-13 on 2 cores in
the soak) a loop that is merely busy for a moment (0.4 s of CPU) spends most
of its wall time waiting in the kernel's run queue and stays silent for
seconds: wall-clock silence alone made false hangs.

So the silence counted is the wall time since the last heartbeat minus the
time the bulkhead's loop thread spent runnable but not running since then
(``run_delay``, the second field of ``/proc/<pid>/schedstat``). A loop
blocked in a call (sleep, lock, stuck I/O) waits for no CPU and is judged at
``heartbeat_timeout`` as before; a loop spinning on a loaded machine is
judged by the CPU time it got. Whatever the load, ``WALL_LIMIT`` times
``heartbeat_timeout`` of plain silence is a hang. Without schedstat (a
kernel without CONFIG_SCHED_INFO) the silence is the wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WALL_LIMIT = 5.0
"""Silence (wall time) that is a hang however long the loop waited for a CPU,
in multiples of ``heartbeat_timeout``."""


def run_delay(pid: int) -> float | None:
    """Seconds the main thread of ``pid`` (the bulkhead's event loop) has spent
    waiting for a CPU since it started; None when the kernel does not say."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


class Silence:
    """The silence of one bulkhead since its last heartbeat."""

    def __init__(
        self,
        timeout: float,
        waited: Callable[[], float | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self._waited = waited
        self._clock = clock
        self.last_beat = clock()
        self._waited_at_beat = waited()

    def beat(self) -> None:
        self.last_beat = self._clock()
        self._waited_at_beat = self._waited()

    def excuse_until(self, moment: float) -> None:
        """Count no silence before ``moment`` (the gateway itself was stalled)."""
        if moment > self.last_beat:
            self.last_beat = moment
            self._waited_at_beat = self._waited()

    def age(self) -> float:
        return self._clock() - self.last_beat

    def hung(self) -> str | None:
        """Why the bulkhead counts as hung now, or None."""
        age = self.age()
        if age <= self.timeout:
            return None
        if age > WALL_LIMIT * self.timeout:
            return f"no heartbeat for {age:.1f}s (limit {WALL_LIMIT * self.timeout:g}s)"
        now, before = self._waited(), self._waited_at_beat
        waited = now - before if now is not None and before is not None else 0.0
        if age - waited <= self.timeout:
            return None  # most of it waiting for a CPU: a loaded machine, not a hang
        return (
            f"no heartbeat for {age:.1f}s, {waited:.1f}s of it waiting for a CPU "
            f"(limit {self.timeout:g}s)"
        )
