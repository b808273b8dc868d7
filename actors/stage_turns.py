"""Turns on the shared event loop for the aggregator's long CPU steps.

The processing stages share one event loop (and one GIL) in their bulkhead.
A batch is a synchronous loop over its records: the aggregator's (up to
5,000 records, ~20 us each) and its window emission held the loop 100 ms and
more, and in that time the validator's and the alarm evaluator's ready steps
waited: device → ``alarms.clean`` p99 305 ms with the aggregator beside them,
146 ms with it apart (``bench alarms``, quiet machine). The aggregator calls
``due()`` every few records (a clock read) and, when it is true, ``await
turn()``: one pass of the loop for the other tasks, then its batch goes on.
Nothing is committed or appended at a turn, so delivery is unchanged (a
cancellation there is like one at any other await: nothing of the batch was
committed, its replay covers it).

Only the background stage takes turns: the validator and the evaluator run
their batches through (a few ms to ~20 ms of CPU), so they go before the
aggregator's next slice. With the validator taking turns as well, the two
shared the loop round-robin, the validator's batches grew (17 → 8 and 10 → 5
batches/s) and device → ``telemetry.clean`` p50 with them (96 → 248 and
145 → 317 ms; bench alarms, two interleaved pairs under load 1-4).
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

    __slots__ = ("_since", "slice_s", "turns")

    def __init__(self, slice_s: float = SLICE_S) -> None:
        self.slice_s = slice_s
        self._since = time.perf_counter()
        self.turns = 0

    def start(self) -> None:
        """A step begins (after an await that let the others run)."""
        self._since = time.perf_counter()

    def due(self) -> bool:
        """Whether the step ran ``slice_s`` since it began or last took a turn."""
        return time.perf_counter() - self._since >= self.slice_s

    async def turn(self) -> None:
        """Let every ready task run once, then go on."""
        await anyio.lowlevel.checkpoint()
        self.turns += 1
        self._since = time.perf_counter()
