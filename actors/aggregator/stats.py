"""Streaming statistics of one window: count, mean, min, max, stddev, percentiles.

While a window holds at most ``max_samples`` numeric values they are simply
kept, and count, mean, min, max, sum and the population standard deviation
are computed from them when the window closes (two passes: numerically
stable; adding a value is a list append). From the first value beyond that,
the numbers continue with Welford's update (stable, O(1) memory). Percentiles are exact (linear interpolation between
closest ranks, numpy's default) while a window holds at most ``max_samples``
values; beyond that a reservoir sample of ``max_samples`` values is kept,
drawn with a random generator seeded by the window's identity, so replaying
the same records in the same order after a restart yields the same result.
"""

from __future__ import annotations

import array
import math
import random
from typing import Any

from otgate.actors.records import Quality

QUALITIES = tuple(Quality)


class WindowStats:
    """Accumulates one window. BAD values are counted but excluded from the numbers."""

    __slots__ = (
        "_m2",
        "_max",
        "_mean",
        "_min",
        "_n",
        "_rng",
        "_running",
        "_samples",
        "_sum",
        "count",
        "first",
        "last",
        "max_samples",
        "quality_counts",
        "seed",
    )

    def __init__(self, max_samples: int = 4096, seed: int = 0) -> None:
        self.count = 0  # every reading, any quality, any value type
        self.first: object = None
        self.last: object = None
        self.quality_counts = [0, 0, 0, 0]  # GOOD, SUSPECT, UNCERTAIN, BAD
        self.max_samples = max_samples
        self.seed = seed
        self._samples: list[float] = []
        self._rng: random.Random | None = None
        # While every numeric value fits in _samples the numbers are computed from
        # them when asked (cheap adds); from the first value beyond max_samples on,
        # they are running values (Welford) and _samples is a reservoir.
        self._running = False
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._min = math.inf
        self._max = -math.inf
        self._sum = 0.0

    def add(self, value: object, quality: Quality) -> None:
        """Add one reading (see ``add_fast`` for the pre-classified form)."""
        x: float | None = None
        if quality is not Quality.BAD and value is not None and not isinstance(value, bool | str):
            x = float(value)  # type: ignore[arg-type]
            if not math.isfinite(x):
                x = None
        self.add_fast(value, QUALITY_INDEX[quality], x)

    def add_fast(self, value: object, qi: int, x: float | None) -> None:
        """Add one reading: ``qi`` its quality's index, ``x`` its number (None: not counted)."""
        self.count += 1
        if self.first is None:
            self.first = value
        self.last = value
        self.quality_counts[qi] += 1
        if x is None:
            return
        if not self._running:
            samples = self._samples
            if len(samples) < self.max_samples:
                samples.append(x)
                return
            self._start_running()
        self._welford(x)

    def _start_running(self) -> None:
        (self._n, self._mean, self._m2, self._min, self._max, self._sum) = self.numbers()
        self._running = True

    def _welford(self, x: float) -> None:
        n = self._n = self._n + 1
        self._sum += x
        delta = x - self._mean
        self._mean += delta / n
        self._m2 += delta * (x - self._mean)
        if x < self._min:
            self._min = x
        if x > self._max:
            self._max = x
        samples = self._samples
        if len(samples) < self.max_samples:
            samples.append(x)
        else:
            if self._rng is None:
                self._rng = random.Random(self.seed)
            j = self._rng.randrange(n)
            if j < self.max_samples:
                samples[j] = x

    def numbers(self) -> tuple[int, float, float, float, float, float]:
        """``(n, mean, m2, min, max, sum)`` of the numeric values (m2: sum of squared
        deviations; with n = 0: 0, 0.0, 0.0, inf, -inf, 0.0)."""
        if self._running:
            return self._n, self._mean, self._m2, self._min, self._max, self._sum
        xs = self._samples
        n = len(xs)
        if not n:
            return 0, 0.0, 0.0, math.inf, -math.inf, 0.0
        total = sum(xs)
        mean = total / n
        m2 = sum([(x - mean) * (x - mean) for x in xs])  # two-pass: as stable as Welford
        return n, mean, m2, min(xs), max(xs), total

    @property
    def n(self) -> int:
        """Numeric, non-BAD values in the statistics."""
        return self._n if self._running else len(self._samples)

    @property
    def mean(self) -> float:
        return self.numbers()[1]

    @property
    def min(self) -> float:
        return self.numbers()[3]

    @property
    def max(self) -> float:
        return self.numbers()[4]

    @property
    def sum(self) -> float:
        return self.numbers()[5]

    def state(self) -> list[Any]:
        """Everything needed to continue this window after a restart (msgpack-able)."""
        rng = self._rng.getstate() if self._rng is not None else None
        n, mean, m2, lo, hi, total = self.numbers()
        return [
            self.count, n, mean, m2, lo, hi, total,
            self.first, self.last, list(self.quality_counts), self.seed,
            array.array("d", self._samples).tobytes(),
            [rng[0], list(rng[1]), rng[2]] if rng is not None else None,
        ]

    @classmethod
    def from_state(cls, state: list[Any], max_samples: int) -> WindowStats:
        st = cls(max_samples, state[10])
        (st.count, st._n, st._mean, st._m2, st._min, st._max, st._sum, st.first, st.last) = (
            state[:9]
        )
        st.quality_counts = list(state[9])
        st._samples = array.array("d", state[11]).tolist()
        if state[12] is not None:
            st._rng = random.Random()
            st._rng.setstate((state[12][0], tuple(state[12][1]), state[12][2]))
        # every value still kept: compute from them again, as before the restart
        st._running = not (st._n == len(st._samples) and st._rng is None)
        return st

    @property
    def stddev(self) -> float | None:
        """Population standard deviation; None with no numeric value."""
        n, _, m2, *_ = self.numbers()
        return math.sqrt(m2 / n) if n else None

    @property
    def worst_quality(self) -> Quality:
        for i in (3, 2, 1, 0):
            if self.quality_counts[i]:
                return QUALITIES[i]
        return Quality.GOOD

    def percentiles(self, qs: tuple[float, ...] = (50.0, 95.0, 99.0)) -> list[float | None]:
        """Percentiles (0-100) by linear interpolation; None with no numeric value."""
        if not self._samples:
            return [None for _ in qs]
        data = sorted(self._samples)
        last = len(data) - 1
        out: list[float | None] = []
        for q in qs:
            pos = last * q / 100.0
            lo = int(pos)
            hi = min(lo + 1, last)
            out.append(data[lo] + (data[hi] - data[lo]) * (pos - lo))
        return out


QUALITY_INDEX = {q: i for i, q in enumerate(QUALITIES)}
"""Index of a quality in ``quality_counts`` (GOOD, SUSPECT, UNCERTAIN, BAD)."""
