"""Reading operator topics from the root without a consumer group.

``TopicTail`` follows one topic: the first ``poll`` reads every partition from
offset 0, later ones only what was appended since. On the embedded log it reads
with the backend's ``read(topic, partition, offset, limit)``; on Kafka, whose
``read`` connects a consumer and waits a second for a fetch that brings nothing,
each tail keeps one group-less consumer between polls (``KafkaTailReader``).
``scan`` reads a topic once, start to end. Records that cannot be decoded are
skipped with a warning: one bad record never hides the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from aiokafka import AIOKafkaConsumer, TopicPartition

from otgate.actors.log.base import LogRecord
from otgate.actors.log.kafka import KafkaLog, _stop_client, log_record
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
        reader = KafkaTailReader(backend, topic, list(parts))
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


class KafkaTailReader:
    """One group-less consumer for a tail, kept between polls (connected on first
    use, dropped on an error and connected again by the next poll).

    A read seeks only where the consumer is not already, then takes what the
    consumer fetched until every partition is at or past the broker's end offset.
    That offset is a lower bound on tansu (the last batch's base offset + 1), but
    a batch is fetched whole: once a partition is past it, nothing appended
    before the read began is left behind. A partition is also done once it reached
    records appended after ``began_ms`` (a topic written faster than it is read
    would otherwise be read for ever). With every partition done, the read takes
    what the consumer already fetched and ends (``caught_up``); so does a fetch
    that brings nothing for ``idle_s`` (the next read goes on from there). Only
    ``limit`` ends a read that is not caught up.
    """

    def __init__(
        self, backend: KafkaLog, topic: str, partitions: list[int], idle_s: float = 1.0
    ) -> None:
        self.backend = backend
        self.tps = [TopicPartition(topic, p) for p in partitions]
        self.idle_s = idle_s
        self.consumer: AIOKafkaConsumer | None = None
        self.connects = 0  # consumers started: one per tail unless an error dropped it
        self._at: dict[int, int] | None = None  # where the consumer stands, by partition
        self.caught_up = False  # the last read ended for lack of records, not for its limit
        self._fresh: set[int] = set()  # partitions at records appended after _fresh_since
        self._fresh_since = 0.0

    async def read(
        self, start: dict[int, int], limit: int = PAGE, began_ms: float | None = None
    ) -> list[LogRecord]:
        """Up to ``limit`` records from ``start`` (partition -> offset), in
        offset order per partition; ``began_ms``: when the caller began (now)."""
        began_ms = time.time() * 1000 if began_ms is None else began_ms
        try:
            return await self._read(start, limit, began_ms)
        except BaseException:
            await self.close()
            raise

    async def _read(self, start: dict[int, int], limit: int, began_ms: float) -> list[LogRecord]:
        c = await self._consumer()
        if self._at != start:
            for tp in self.tps:
                c.seek(tp, start[tp.partition])
            self._at = dict(start)
        at = self._at
        ends = await c.end_offsets(self.tps)
        if self._fresh_since != began_ms:  # a new pass: no partition is at newer records yet
            self._fresh_since, self._fresh = began_ms, set()
        fresh = self._fresh
        out: list[LogRecord] = []
        self.caught_up = False
        while True:
            behind = [
                tp for tp in self.tps if at[tp.partition] < ends[tp] and tp.partition not in fresh
            ]
            if not behind:  # what is fetched already: the rest of a batch, maybe newer ones
                self._take(await c.getmany(*self.tps, timeout_ms=0), out, at, began_ms, fresh)
                self.caught_up = True
                break
            if len(out) >= limit:
                break
            got = await c.getmany(
                *behind, timeout_ms=int(self.idle_s * 1000), max_records=limit - len(out)
            )
            if not any(got.values()):
                self.caught_up = True  # idle: the next read goes on from here
                break
            self._take(got, out, at, began_ms, fresh)
        return out

    @staticmethod
    def _take(
        got: dict[TopicPartition, list[Any]],
        out: list[LogRecord],
        at: dict[int, int],
        began_ms: float,
        fresh: set[int],
    ) -> None:
        for tp, recs in got.items():
            if recs:
                out += [log_record(r) for r in recs]
                at[tp.partition] = recs[-1].offset + 1
                if recs[-1].timestamp >= began_ms:
                    fresh.add(tp.partition)

    async def _consumer(self) -> AIOKafkaConsumer:
        if self.consumer is None:
            c = AIOKafkaConsumer(
                bootstrap_servers=self.backend.bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # an offset retention removed: the oldest kept
                client_id=self.backend.client_id,
            )
            try:
                await c.start()
            except BaseException:
                await _stop_client(c)
                raise
            c.assign(self.tps)
            self.consumer, self._at = c, None
            self.connects += 1
        return self.consumer

    async def close(self) -> None:
        if self.consumer is not None:
            c, self.consumer = self.consumer, None
            await _stop_client(c)


class TopicTail:
    """Follows one topic from its start (see module doc)."""

    def __init__(self, oplog: OperatorLog, topic: str) -> None:
        self.oplog = oplog
        self.topic = topic
        self.kafka: KafkaTailReader | None = None
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

    async def _kafka(self, backend: KafkaLog) -> KafkaTailReader:
        if self.kafka is None or self.kafka.backend is not backend:  # the log was reopened
            await self.close()
            self.kafka = KafkaTailReader(backend, self.topic, list(range(len(self._next or []))))
        return self.kafka

    async def close(self) -> None:
        """Stop the Kafka consumer, if any (the operator log calls it as it closes)."""
        if self.kafka is not None:
            await self.kafka.close()
