"""Reading Kafka partitions without a consumer group: ``KafkaReader``.

One reader serves both a one-shot read (``KafkaLog.read``, behind ``otgate log
read``) and the operator's tails, which keep it between polls. Both stop at
records appended after the call began: a topic written faster than it is read
would otherwise be read for ever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from otgate.actors.log.base import LogRecord

if TYPE_CHECKING:
    from otgate.actors.log.kafka import KafkaLog

log = logging.getLogger("otgate.log")


def log_record(r: Any) -> LogRecord:
    """An aiokafka ``ConsumerRecord`` as the log's ``LogRecord`` (ms → ns)."""
    return LogRecord(topic=r.topic, partition=r.partition, offset=r.offset, key=r.key,
                     value=r.value, timestamp_ns=r.timestamp * 1_000_000)


async def stop_client(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Stop an aiokafka client, shielded from cancellation. aiokafka's fetcher
    close awaits the fetch tasks it has just cancelled: stopped while a fetch
    retries against a broker that is gone, ``stop()`` raises ``CancelledError``
    into a caller nobody cancelled, and anyio would take that for a cancellation
    of the caller's task group (the whole gateway stopped on a broker crash).
    Inside the shield no real cancellation can arrive, so that one is swallowed;
    a real one is delivered after the shield as usual."""
    with anyio.CancelScope(shield=True):
        try:
            await client.stop()
        except asyncio.CancelledError:
            log.warning("kafka_client_stop_cancelled client=%s", type(client).__name__)


class KafkaReader:
    """A group-less consumer on some partitions of one topic, kept between reads
    (connected on first use, dropped on an error and connected again by the next
    read); no offsets are committed and no group is left behind.

    A read seeks only where the consumer is not already, then takes what the
    consumer fetched until every partition is done. A partition is done once it
    reached records appended after the read began, or once the consumer fetched
    it to the broker's end offset or past it. That offset is a lower bound on
    tansu (the last batch's base offset + 1), but a batch is fetched whole: once a
    fetch took a partition past it, nothing appended before the read began is left
    behind. A position that only a seek set may lie inside tansu's last batch,
    past that end offset: it is fetched all the same. With every partition done,
    the read takes what the consumer already fetched and ends (``caught_up``); so
    does a fetch that brings nothing for ``idle_s`` (the next read goes on from
    there). Only ``limit`` ends a read that is not caught up; what the consumer
    already fetched comes whole, so a caught-up read may return more.

    ``offset_reset`` is where an offset the broker no longer (or not yet) has
    leads: "earliest" (the oldest kept) or "latest" (nothing before new records).
    """

    def __init__(
        self,
        backend: KafkaLog,
        topic: str,
        partitions: list[int],
        idle_s: float = 1.0,
        offset_reset: str = "earliest",
    ) -> None:
        self.backend = backend
        self.tps = [TopicPartition(topic, p) for p in partitions]
        self.idle_s = idle_s
        self.offset_reset = offset_reset
        self.consumer: AIOKafkaConsumer | None = None
        self.connects = 0  # consumers started: one per tail unless an error dropped it
        self._at: dict[int, int] | None = None  # where the consumer stands, by partition
        self._sought: set[int] = set()  # partitions at a position a seek set, not a fetch
        self.caught_up = False  # the last read ended for lack of records, not for its limit
        self._fresh: set[int] = set()  # partitions at records appended after _fresh_since
        self._fresh_since = 0.0

    async def read(
        self, start: dict[int, int], limit: int, began_ms: float | None = None
    ) -> list[LogRecord]:
        """Up to ``limit`` records from ``start`` (partition -> offset), in offset
        order per partition; ``began_ms``: when the caller began (default now; a
        caller reading page by page passes the time of its first page)."""
        began_ms = time.time() * 1000 if began_ms is None else began_ms
        try:
            return await self._read(start, limit, began_ms)
        except BaseException:
            await self.close()
            raise

    async def _read(self, start: dict[int, int], limit: int, began_ms: float) -> list[LogRecord]:
        c = await self._consumer()
        # Asked before the first assign: once assigned, the consumer keeps a fetch
        # at the broker, which holds it up to fetch_max_wait_ms when there is
        # nothing new, and the answer waits behind it on the connection.
        ends = await c.end_offsets(self.tps)
        if not c.assignment():
            c.assign(self.tps)
        if self._at != start:
            for tp in self.tps:
                c.seek(tp, start[tp.partition])
            self._at, self._sought = dict(start), {tp.partition for tp in self.tps}
        at = self._at
        if self._fresh_since != began_ms:  # a new pass: no partition is at newer records yet
            self._fresh_since, self._fresh = began_ms, set()
        out: list[LogRecord] = []
        self.caught_up = False
        while True:
            behind = [tp for tp in self.tps if self._behind(tp, at[tp.partition], ends[tp])]
            if not behind:  # what is fetched already: the rest of a batch, maybe newer ones
                self._take(await c.getmany(*self.tps, timeout_ms=0), out, began_ms)
                self.caught_up = True
                break
            if len(out) >= limit:
                break
            got = await c.getmany(
                *behind, timeout_ms=int(self.idle_s * 1000), max_records=limit - len(out)
            )
            if not any(got.values()):
                self._sought.difference_update(tp.partition for tp in behind)  # at the end
                self.caught_up = True  # idle: the next read goes on from here
                break
            self._take(got, out, began_ms)
        return out

    def _behind(self, tp: TopicPartition, at: int, end: int) -> bool:
        if tp.partition in self._fresh:
            return False
        return at < end or (tp.partition in self._sought and end > 0)

    def _take(self, got: dict[TopicPartition, list[Any]], out: list[LogRecord],
              began_ms: float) -> None:
        assert self._at is not None
        for tp, recs in got.items():
            if recs:
                out += [log_record(r) for r in recs]
                self._at[tp.partition] = recs[-1].offset + 1
                self._sought.discard(tp.partition)
                if recs[-1].timestamp >= began_ms:
                    self._fresh.add(tp.partition)

    async def _consumer(self) -> AIOKafkaConsumer:
        if self.consumer is None:
            c = AIOKafkaConsumer(
                bootstrap_servers=self.backend.bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset=self.offset_reset,
                client_id=self.backend.client_id,
            )
            try:
                await c.start()
            except BaseException:
                await stop_client(c)
                raise
            self.consumer, self._at = c, None
            self.connects += 1
        return self.consumer

    async def close(self) -> None:
        if self.consumer is not None:
            c, self.consumer = self.consumer, None
            await stop_client(c)
