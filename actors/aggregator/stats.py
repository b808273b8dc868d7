"""Streaming statistics of one window: count, mean, min, max, stddev, percentiles.

Mean and population standard deviation use Welford's update (numerically
stable, O(1) memory). Percentiles are exact (linear interpolation between
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
        "_rng",
        "_samples",
        "count",
        "first",
        "last",
        "max",
        "max_samples",
        "mean",
        "min",
        "n",
        "quality_counts",
        "seed",
        "sum",
    )

    def __init__(self, max_samples: int = 4096, seed: int = 0) -> None:
        self.count = 0  # every reading, any quality, any value type
        self.n = 0  # numeric, non-BAD values in the statistics
        self.mean = 0.0
        self.sum = 0.0
        self._m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.first: object = None
        self.last: object = None
        self.quality_counts = [0, 0, 0, 0]  # GOOD, SUSPECT, UNCERTAIN, BAD
        self.max_samples = max_samples
        self.seed = seed
        self._samples: list[float] = []
        self._rng: random.Random | None = None

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
        n = self.n = self.n + 1
        self.sum += x
        delta = x - self.mean
        self.mean += delta / n
        self._m2 += delta * (x - self.mean)
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x
        samples = self._samples
        if len(samples) < self.max_samples:
            samples.append(x)
        else:
            if self._rng is None:
                self._rng = random.Random(self.seed)
            j = self._rng.randrange(n)
            if j < self.max_samples:
                samples[j] = x

    def state(self) -> list[Any]:
        """Everything needed to continue this window after a restart (msgpack-able)."""
        rng = self._rng.getstate() if self._rng is not None else None
        return [
            self.count, self.n, self.mean, self._m2, self.min, self.max, self.sum,
            self.first, self.last, list(self.quality_counts), self.seed,
            array.array("d", self._samples).tobytes(),
            [rng[0], list(rng[1]), rng[2]] if rng is not None else None,
        ]

    @classmethod
    def from_state(cls, state: list[Any], max_samples: int) -> WindowStats:
        st = cls(max_samples, state[10])
        (st.count, st.n, st.mean, st._m2, st.min, st.max, st.sum, st.first, st.last) = state[:9]
        st.quality_counts = list(state[9])
        st._samples = array.array("d", state[11]).tolist()
        if state[12] is not None:
            st._rng = random.Random()
            st._rng.setstate((state[12][0], tuple(state[12][1]), state[12][2]))
        return st

    @property
    def stddev(self) -> float | None:
        """Population standard deviation; None with no numeric value."""
        return math.sqrt(self._m2 / self.n) if self.n else None

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
