"""Streaming statistics of one window: count, mean, min, max, stddev, percentiles.

While a window holds at most ``max_samples`` numeric values they are simply
kept, and count, mean, min, max, sum and the population standard deviation
are computed from them when asked (two passes: numerically stable; adding a
value is an array append). Beyond that the numbers are running values: new
values are buffered and folded in every ``FOLD`` values with the two-pass
statistics of the buffer and Chan's parallel combination (as stable as
Welford's update, a fraction of its cost per value); the fold points depend
on the count only, and the buffer is part of the saved state, so results do
not depend on when checkpoints happened.

Percentiles are exact (linear interpolation between closest ranks, numpy's
default) while a window holds at most ``max_samples`` values; beyond that a
uniform reservoir sample of ``max_samples`` values is kept (Li's Algorithm
L: a random skip to the next value to keep, so most values cost a counter
compare), drawn with a random generator seeded by the window's identity, so
replaying the same records in the same order after a restart yields the same
result.
"""

from __future__ import annotations

import array
import math
import random
from typing import Any

from otgate.actors.records import Quality

QUALITIES = tuple(Quality)
FOLD = 256
"""Running mode: buffered values folded into the numbers at a time."""


class WindowStats:
    """Accumulates one window. BAD values are counted but excluded from the numbers."""

    __slots__ = (
        "_buf",
        "_m2",
        "_max",
        "_mean",
        "_min",
        "_n",
        "_next",
        "_rng",
        "_running",
        "_samples",
        "_sum",
        "_w",
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
        # 8 bytes a value (a list of floats costs 32): a 1 h window keeps up to
        # max_samples of them for every stream, and they add up in the bulkhead
        self._samples = array.array("d")
        self._rng: random.Random | None = None
        # While every numeric value fits in _samples the numbers are computed from
        # them when asked (cheap adds); from the first value beyond max_samples on,
        # they are running values (Welford) and _samples is a reservoir.
        self._running = False
        # running mode: values not folded into the numbers yet. An array, not a list:
        # a list keeps up to FOLD float objects (32 B each) alive per running window for
        # minutes, scattered over the allocator's pools among short-lived objects
        self._buf = array.array("d")
        self._w = 1.0  # Algorithm L's state: the weight and the count of the next kept value
        self._next = 0
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
        self.add_number(x)

    def add_number(self, x: float) -> None:
        """The numeric part of ``add_fast`` once ``max_samples`` values are kept
        (``Windows.add`` inlines the rest)."""
        if not self._running:
            self._start_running()
        buf = self._buf
        buf.append(x)
        seen = self._n + len(buf)
        if seen >= self._next:
            self._keep(x, seen)
        if len(buf) >= FOLD:
            self._fold()

    def _start_running(self) -> None:
        (self._n, self._mean, self._m2, self._min, self._max, self._sum) = self.numbers()
        self._running = True
        if self._rng is None:
            self._rng = random.Random(self.seed)
        self._w = math.exp(math.log(1.0 - self._rng.random()) / self.max_samples)
        self._next = self._n + self._skip()

    def _skip(self) -> int:
        """How many values on from the last kept one the next kept value is (Algorithm L)."""
        w = self._w
        if w >= 1.0:
            return 1
        assert self._rng is not None
        return int(math.log(1.0 - self._rng.random()) / math.log(1.0 - w)) + 1

    def _keep(self, x: float, seen: int) -> None:
        rng = self._rng
        assert rng is not None
        self._samples[rng.randrange(self.max_samples)] = x
        self._w *= math.exp(math.log(1.0 - rng.random()) / self.max_samples)
        self._next = seen + self._skip()

    def _fold(self) -> None:
        (self._n, self._mean, self._m2, self._min, self._max, self._sum) = self._folded()
        self._buf = array.array("d")

    def _folded(self) -> tuple[int, float, float, float, float, float]:
        buf = self._buf
        if not buf:
            return self._n, self._mean, self._m2, self._min, self._max, self._sum
        nb = len(buf)
        total_b = sum(buf)
        mean_b = total_b / nb
        m2_b = sum([(x - mean_b) * (x - mean_b) for x in buf])
        na = self._n
        n = na + nb
        delta = mean_b - self._mean
        return (
            n,
            self._mean + delta * nb / n,
            self._m2 + m2_b + delta * delta * na * nb / n,
            min(self._min, min(buf)),
            max(self._max, max(buf)),
            self._sum + total_b,
        )

    def numbers(self) -> tuple[int, float, float, float, float, float]:
        """``(n, mean, m2, min, max, sum)`` of the numeric values (m2: sum of squared
        deviations; with n = 0: 0, 0.0, 0.0, inf, -inf, 0.0)."""
        if self._running:
            return self._folded()
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
        return self._n + len(self._buf) if self._running else len(self._samples)

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
        """Everything needed to continue this window after a restart (msgpack-able).

        Elements 0-12 as before (the numbers folded with the buffer, so an older
        reader sees complete numbers); 13: the buffer and the reservoir's skip
        state, so that this version continues exactly."""
        rng = self._rng.getstate() if self._rng is not None else None
        n, mean, m2, lo, hi, total = self.numbers()
        return [
            self.count, n, mean, m2, lo, hi, total,
            self.first, self.last, list(self.quality_counts), self.seed,
            self._samples.tobytes(),
            # the generator's 625 words as 2.5 KB of bytes, not a list of 625 ints
            # (~25 KB of objects per running window while a checkpoint is encoded)
            [rng[0], array.array("I", rng[1]).tobytes(), rng[2]] if rng is not None else None,
            [self._n, self._mean, self._m2, self._min, self._max, self._sum,
             self._buf.tobytes(), self._w, self._next]
            if self._running else None,
        ]

    @classmethod
    def from_state(cls, state: list[Any], max_samples: int) -> WindowStats:
        st = cls(max_samples, state[10])
        (st.count, st._n, st._mean, st._m2, st._min, st._max, st._sum, st.first, st.last) = (
            state[:9]
        )
        st.quality_counts = list(state[9])
        st._samples = array.array("d", state[11])
        if state[12] is not None:
            st._rng = random.Random()
            words = state[12][1]  # bytes; a list of ints in older checkpoints
            if isinstance(words, bytes):
                words = array.array("I", words)
            st._rng.setstate((state[12][0], tuple(words), state[12][2]))
        running = state[13] if len(state) > 13 else None
        if running is not None:
            (st._n, st._mean, st._m2, st._min, st._max, st._sum, buf, st._w, st._next) = running
            st._buf = array.array("d", buf)
            st._running = True
        elif st._n == len(st._samples) and st._rng is None:
            st._running = False  # every value still kept: computed from them again
        else:  # an older gateway's running state: continue it with a fresh skip
            st._running = True
            if st._rng is None:
                st._rng = random.Random(st.seed)
            st._w = math.exp(math.log(1.0 - st._rng.random()) / max_samples)
            st._next = st._n + st._skip()
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
