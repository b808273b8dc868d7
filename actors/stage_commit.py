"""Input-offset commits of a stage actor, at most every ``interval_s``.

A stage appends a batch's outputs, then ``add``s the batch's input offsets:
from then on committing them can lose nothing (at-least-once: a crash before
the commit replays the batch). Committing after every batch costs one more
write transaction (the log's write lock and an fsync) on the stage's path
before it reads the next batch; on the embedded log that wait was the larger
part of a caught-up stage's cycle when other processes held the lock. So
``maybe`` commits only when ``interval_s`` passed since the last commit, and
the stage calls ``flush`` when it is caught up (an empty fetch) and when it
stops. A kill -9 then replays at most ``interval_s`` more input than before;
the stages already handle a replay (the sinks' upsert, the alarm evaluator's
watermarks).

The commit is a synced write (an fsync of the log): outputs a stage appended
unsynced (``append(sync=False)``, the validator's) before ``add`` are durable
once it returned, so an input offset is never durable before what was made
from it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("otgate.processing")


class OffsetCommits:
    """Pending input offsets of appended batches and when to commit them (see module doc)."""

    def __init__(self, consumer: Any, interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.consumer = consumer
        self.interval_s = interval_s
        self._clock = clock
        self._pending: dict[tuple[str, int], int] = {}
        self._last = clock()
        self.commits = 0

    def add(self, offsets: dict[tuple[str, int], int]) -> None:
        """Offsets whose batch's outputs are appended (safe to commit from now on)."""
        self._pending.update(offsets)

    async def maybe(self) -> None:
        """Commit the pending offsets when ``interval_s`` passed since the last commit."""
        if self._pending and self._clock() - self._last >= self.interval_s:
            await self.flush()

    async def flush(self) -> None:
        """Commit the pending offsets now (raises what the consumer's commit raises)."""
        if not self._pending:
            return
        offsets, self._pending = self._pending, {}
        try:
            await self.consumer.commit(offsets)
        except BaseException:
            for tp, off in offsets.items():  # keep them for the next try
                self._pending.setdefault(tp, off)
            raise
        self._last = self._clock()
        self.commits += 1

    async def close(self) -> None:
        """Commit what is pending at stop; a failure only means a longer replay."""
        try:
            await self.flush()
        except Exception as exc:  # the log may be what failed: the replay covers it
            log.warning("stage_commit_at_stop_failed group=%s error=%s",
                        getattr(self.consumer, "group", "?"), type(exc).__name__)
