"""Streaming statistics of one window: count, mean, min, max, stddev, percentiles.

Mean and population standard deviation use Welford's update (numerically
stable, O(1) memory). Percentiles are exact (linear interpolation between
closest ranks, numpy's default) while a window holds at most ``max_samples``
values; beyond that a reservoir sample of ``max_samples`` values is kept,
drawn with a random generator seeded by the window's identity, so replaying
the same records in the same order after a restart yields the same result.
"""

from __future__ import annotations

import math
import random

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
