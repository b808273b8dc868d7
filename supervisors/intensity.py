"""Restart intensity (restarts within a period) and exponential backoff with jitter."""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable


class RestartIntensity:
    """Counts restarts in a sliding window of monotonic time.

    ``record()`` returns False when this restart would exceed ``intensity``
    restarts within ``period`` seconds: the caller must give up (OTP semantics).
    """

    def __init__(
        self, intensity: int, period: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.intensity = intensity
        self.period = period
        self._clock = clock
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._times and now - self._times[0] > self.period:
            self._times.popleft()

    def record(self) -> bool:
        now = self._clock()
        self._expire(now)
        self._times.append(now)
        return len(self._times) <= self.intensity

    def recent(self) -> int:
        """Restarts still inside the window."""
        self._expire(self._clock())
        return len(self._times)

    def clear(self) -> None:
        self._times.clear()


def backoff_delay(
    attempt: int,
    initial: float,
    maximum: float,
    jitter: float,
    rng: Callable[[], float] = random.random,
) -> float:
    """Delay before restart number ``attempt`` (1-based) of a window.

    Doubles from ``initial`` up to ``maximum``; a random fraction up to
    ``jitter`` is taken off so siblings that failed together do not restart in
    lockstep.
    """
    if attempt <= 0 or initial <= 0:
        return 0.0
    base = min(maximum, initial * (2 ** (attempt - 1)))
    return base * (1.0 - jitter * rng())
