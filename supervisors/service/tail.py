"""Reading operator topics from the root without a consumer group.

``TopicTail`` follows one topic: the first ``poll`` reads every partition from
offset 0, later ones only what was appended since. On the embedded log it reads
with the backend's ``read(topic, partition, offset, limit)``; on Kafka, whose
``read`` connects a consumer of its own, each tail keeps one ``KafkaReader``
(a group-less consumer, the one behind ``read``) between polls.
``scan`` reads a topic once, start to end. Records that cannot be decoded are
skipped with a warning: one bad record never hides the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio

from otgate.actors.log.base import LogRecord
from otgate.actors.log.kafka import KafkaLog
from otgate.actors.log.kafka_reader import KafkaReader
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
    first = start if partition is not None else 0
    if isinstance(backend, KafkaLog):
        reader = KafkaReader(backend, topic, list(parts))
        at = dict.fromkeys(parts, first)
        began_ms = time.time() * 1000
        try:
            while True:
                for rec in await reader.read(at, PAGE, began_ms):
                    at[rec.partition] = rec.offset + 1
                    obj = await _decode(oplog, rec)
                    if obj is not None:
                        yield rec, obj
                if reader.caught_up:
                    break
        finally:
            await reader.close()
        return
    for p in parts:
        offset = first
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
        self.kafka: KafkaReader | None = None
        self._next: list[int] | None = None
        self._lock = anyio.Lock()
        oplog.on_close(self.close)

    async def poll(self) -> list[tuple[LogRecord, Any]]:
        """The records appended since the last poll (all of them the first time)."""
        async with self._lock:
            backend = await self.oplog.backend()
            if self._next is None:
                self._next = [0] * await partitions(self.oplog, self.topic)
            out: list[tuple[LogRecord, Any]] = []
            began_ms = time.time() * 1000
            while True:
                if isinstance(backend, KafkaLog):
                    reader = await self._kafka(backend)
                    recs = await reader.read(dict(enumerate(self._next)), PAGE, began_ms)
                    done = reader.caught_up
                else:
                    recs = await self._embedded(backend)
                    done = len(recs) < PAGE
                for rec in recs:
                    self._next[rec.partition] = rec.offset + 1
                    obj = await _decode(self.oplog, rec)
                    if obj is not None:
                        out.append((rec, obj))
                if done:
                    return out

    async def _embedded(self, backend: Any) -> list[LogRecord]:
        """Up to PAGE records of each partition from where the tail stands."""
        assert self._next is not None
        out: list[LogRecord] = []
        for p, offset in enumerate(self._next):
            out += await backend.read(self.topic, p, offset, PAGE)
        return out

    async def _kafka(self, backend: KafkaLog) -> KafkaReader:
        if self.kafka is None or self.kafka.backend is not backend:  # the log was reopened
            await self.close()
            self.kafka = KafkaReader(backend, self.topic, list(range(len(self._next or []))))
        return self.kafka

    async def close(self) -> None:
        """Stop the Kafka consumer, if any (the operator log calls it as it closes)."""
        if self.kafka is not None:
            await self.kafka.close()
