"""Reading operator topics from the root without a consumer group.

``TopicTail`` follows one topic: the first ``poll`` reads every partition from
offset 0, later ones only what was appended since (both backends implement
``read(topic, partition, offset, limit)``). ``scan`` reads a topic once, start
to end. Records that cannot be decoded are skipped with a warning: one bad
record never hides the others.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio

from otgate.actors.log.base import LogRecord
from otgate.actors.log.schemas import SchemaUnavailable
from otgate.actors.validator.actor import DECODE_ERRORS
from otgate.supervisors.oplog import OperatorLog

log = logging.getLogger("otgate.service")
PAGE = 5_000


async def partitions(oplog: OperatorLog, topic: str) -> int:
    """How many partitions ``topic`` has (0 when it does not exist)."""
    backend = await oplog.backend()
    for spec in await backend.topics():
        if spec.name == topic:
            return spec.partitions
    return 0


async def _decode(oplog: OperatorLog, rec: LogRecord) -> Any | None:
    assert oplog.decoder is not None
    try:
        return await oplog.decoder.decode_async(rec.topic, rec.value)
    except (*DECODE_ERRORS, SchemaUnavailable) as exc:
        log.warning(
            "service_undecodable topic=%s partition=%d offset=%d error=%s",
            rec.topic,
            rec.partition,
            rec.offset,
            type(exc).__name__,
        )
        return None


async def read_at(oplog: OperatorLog, topic: str, partition: int, offset: int) -> Any | None:
    """The decoded record at one position (None when it is gone or undecodable)."""
    backend = await oplog.backend()
    recs = await backend.read(topic, partition, offset, 1)
    if not recs or recs[0].offset != offset:
        return None
    return await _decode(oplog, recs[0])


async def scan(
    oplog: OperatorLog, topic: str, partition: int | None = None, start: int = 0
) -> AsyncIterator[tuple[LogRecord, Any]]:
    """Every decodable record of ``topic`` (or one partition from ``start``), in
    offset order per partition."""
    backend = await oplog.backend()
    parts = [partition] if partition is not None else range(await partitions(oplog, topic))
    for p in parts:
        offset = start if partition is not None else 0
        while True:
            recs = await backend.read(topic, p, offset, PAGE)
            if not recs:
                break
            for rec in recs:
                obj = await _decode(oplog, rec)
                if obj is not None:
                    yield rec, obj
            offset = recs[-1].offset + 1


class TopicTail:
    """Follows one topic from its start (see module doc)."""

    def __init__(self, oplog: OperatorLog, topic: str) -> None:
        self.oplog = oplog
        self.topic = topic
        self._next: list[int] | None = None
        self._lock = anyio.Lock()

    async def poll(self) -> list[tuple[LogRecord, Any]]:
        """The records appended since the last poll (all of them the first time)."""
        async with self._lock:
            backend = await self.oplog.backend()
            if self._next is None:
                self._next = [0] * await partitions(self.oplog, self.topic)
            out: list[tuple[LogRecord, Any]] = []
            for p, offset in enumerate(self._next):
                while recs := await backend.read(self.topic, p, offset, PAGE):
                    for rec in recs:
                        obj = await _decode(self.oplog, rec)
                        if obj is not None:
                            out.append((rec, obj))
                    offset = recs[-1].offset + 1
                    if len(recs) < PAGE:
                        break
                self._next[p] = offset
            return out
