"""Turns on the shared event loop for a stage's long CPU steps.

The processing stages share one event loop (and one GIL) in their bulkhead.
A batch is a synchronous loop over its records: the aggregator's 5,000
records held the loop ~100 ms on a quiet machine (and several times that
under load), and in that time the validator's and the alarm evaluator's
ready steps waited: the device → ``alarms.clean`` p99 was 305 ms with the
aggregator beside them, 146 ms with it apart (``bench alarms``). A stage
calls ``due()`` every few records (a clock read) and, when it is true,
``await turn()``: one pass of the loop for the other tasks, then its batch
goes on. Nothing is committed or appended at a turn, so delivery is unchanged
(a cancellation there is like one at any other await: nothing of the batch
was committed, its replay covers it).

``away_cpu_s`` is the thread CPU the others used during the turns (the loop
runs them on this thread), for stages that report their own CPU per batch.
"""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel

SLICE_S = 0.003
"""The longest a stage's step runs before it lets the others take a turn."""
EVERY = 64
"""Records between two looks at the clock (~64 x 10-20 us per record)."""


class Turns:
    """When a stage's step lets the other tasks run (see module doc)."""

    __slots__ = ("_since", "away_cpu_s", "slice_s", "turns")

    def __init__(self, slice_s: float = SLICE_S) -> None:
        self.slice_s = slice_s
        self._since = time.perf_counter()
        self.turns = 0
        self.away_cpu_s = 0.0

    def start(self) -> None:
        """A step begins (after an await that let the others run)."""
        self._since = time.perf_counter()

    def due(self) -> bool:
        """Whether the step ran ``slice_s`` since it began or last took a turn."""
        return time.perf_counter() - self._since >= self.slice_s

    async def turn(self) -> None:
        """Let every ready task run once, then go on."""
        c0 = time.thread_time()
        await anyio.lowlevel.checkpoint()
        self.away_cpu_s += time.thread_time() - c0
        self.turns += 1
        self._since = time.perf_counter()
