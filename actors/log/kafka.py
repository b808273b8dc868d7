"""The Kafka backend: aiokafka against Redpanda (or any Kafka-compatible broker).

``append`` returns once the broker acknowledged every record with acks=all.
Partitioning is ours (``partition.partition_for``: Kafka's murmur2), so both
backends put a key in the same partition number. Large appends are sent as
pre-built batches (``create_batch``/``send_batch``); small ones go through
``send`` so the producer's linger merges them with other sessions' records.

Backpressure: when a partition already has a batch waiting, ``send_batch``
waits (up to ``request_timeout_s``, then raises ``KafkaTimeoutError``): the
calling session blocks, nothing is dropped silently.

Ordering: aiokafka keeps one in-flight request per partition, so records of
one key stay in order even without idempotence. Idempotence (default on)
avoids duplicates when the producer retries; tansu 0.6 does not support it.

Consumers use a consumer group with manual commits and start at the group's
committed offsets, else at the earliest record. tansu under-reports the end
offset: ``watermarks`` gives it only as a lower bound, and ``read``
(``kafka_reader.KafkaReader``) trusts it only once a fetch went past it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, TopicAlreadyExistsError

from otgate.actors.log.base import LogRecord, TopicSpec
from otgate.actors.log.base import TopicPartition as TP
from otgate.actors.log.kafka_reader import KafkaReader, log_record, stop_client
from otgate.actors.log.partition import partition_for

log = logging.getLogger("otgate.log")

SMALL_APPEND = 32
"""Appends with fewer records go record by record (the producer's linger batches them)."""


def is_retriable(exc: BaseException) -> bool:
    """Errors where retrying the append later can help (broker down or slow)."""
    return isinstance(exc, KafkaConnectionError | KafkaTimeoutError) or getattr(
        exc, "retriable", False
    )


class KafkaLog:
    """``LogBackend`` on a Kafka-compatible broker."""

    def __init__(
        self,
        bootstrap_servers: Sequence[str] | str,
        *,
        idempotence: bool = True,
        compression: str | None = None,
        linger_ms: int = 5,
        max_batch_bytes: int = 256 * 1024,
        request_timeout_s: float = 30.0,
        client_id: str = "otgate",
        replication_factor: int = 1,
    ) -> None:
        if isinstance(bootstrap_servers, str):
            bootstrap_servers = [bootstrap_servers]
        self.bootstrap_servers = list(bootstrap_servers)
        self.idempotence = idempotence
        self.compression = None if compression in (None, "none") else compression
        self.linger_ms = linger_ms
        self.max_batch_bytes = max_batch_bytes
        self.request_timeout_s = request_timeout_s
        self.client_id = client_id
        self.replication_factor = replication_factor
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, int] = {}
        self._meta: AIOKafkaConsumer | None = None  # watermarks' consumer, made on first use
        self._meta_lock = anyio.Lock()
        self.appended = 0

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            acks="all",
            enable_idempotence=self.idempotence,
            compression_type=self.compression,
            linger_ms=self.linger_ms,
            max_batch_size=self.max_batch_bytes,
            max_request_size=max(self.max_batch_bytes * 4, 1024 * 1024),
            request_timeout_ms=int(self.request_timeout_s * 1000),
            client_id=self.client_id,
        )
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()
            self._producer = None
            raise

    async def close(self) -> None:
        if self._meta is not None:
            m, self._meta = self._meta, None
            await stop_client(m)
        if self._producer is not None:
            p, self._producer = self._producer, None
            await stop_client(p)

    def _prod(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaLog used before start() or after close()")
        return self._producer

    async def ensure_topics(self, topics: Sequence[TopicSpec]) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            request_timeout_ms=int(self.request_timeout_s * 1000),
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [
                NewTopic(
                    name=t.name,
                    num_partitions=t.partitions,
                    replication_factor=self.replication_factor,
                    topic_configs=_topic_configs(t),
                )
                for t in topics
                if t.name not in existing
            ]
            if new:
                try:
                    await admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass  # another process created it first
                log.info("log_topics_created names=%s", ",".join(t.name for t in new))
        finally:
            await admin.close()

    async def topics(self) -> list[TopicSpec]:
        """Topics on the broker with their partition counts (retention not read back)."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, client_id=self.client_id
        )
        await admin.start()
        try:
            names = sorted(n for n in await admin.list_topics() if not n.startswith("__"))
            meta = await admin.describe_topics(names)
        finally:
            await admin.close()
        return [
            TopicSpec(name=m["topic"], partitions=len(m["partitions"]))
            for m in meta
            if not m.get("error_code")
        ]

    async def read(
        self, topic: str, partition: int, offset: int, limit: int, *, idle_s: float = 1.0
    ) -> list[LogRecord]:
        """Up to ``limit`` records of one partition from ``offset`` (no group, no
        commit), read by a ``KafkaReader`` of its own: up to the records appended
        after the call began, or until a fetch brings nothing for ``idle_s``. An
        offset the broker does not have reads as the end (nothing)."""
        reader = KafkaReader(self, topic, [partition], idle_s, offset_reset="latest")
        try:
            return (await reader.read({partition: offset}, limit))[:limit]
        finally:
            await reader.close()

    async def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        """``{partition: (oldest offset, next offset)}`` as the broker reports them.

        The next offset is a lower bound only: tansu reports the last batch's
        base offset + 1. Good for "search from here", never for "read up to here".
        Sinks ask every second (lag), so one group-less consumer serves every
        call; a failed call drops it and the next call connects again.
        """
        tps = [TopicPartition(topic, p) for p in range(await self._partition_count(topic))]
        async with self._meta_lock:
            if self._meta is None:
                c = AIOKafkaConsumer(
                    bootstrap_servers=self.bootstrap_servers,
                    group_id=None,
                    enable_auto_commit=False,
                    client_id=self.client_id,
                )
                try:
                    await c.start()
                except BaseException:
                    await stop_client(c)
                    raise
                self._meta = c
            try:
                low = await self._meta.beginning_offsets(tps)
                high = await self._meta.end_offsets(tps)
            except BaseException:
                c, self._meta = self._meta, None
                await stop_client(c)
                raise
        return {tp.partition: (low[tp], high[tp]) for tp in tps}

    async def _partition_count(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            parts = await self._prod().partitions_for(topic)
            n = self._partitions[topic] = len(parts)
        return n

    async def append(self, topic: str, records: Sequence[tuple[bytes | None, bytes]], *,
                     sync: bool = True) -> None:
        """Send and wait for acks=all of every record (``sync=False`` too: the broker
        decides when it flushes); raises on the first failure."""
        if not records:
            return
        prod = self._prod()
        nparts = await self._partition_count(topic)
        futures: list[Any] = []
        if len(records) < SMALL_APPEND:
            for key, value in records:
                futures.append(
                    await prod.send(topic, value, key=key, partition=partition_for(key, nparts))
                )
        else:
            by_part: dict[int, list[tuple[bytes | None, bytes]]] = {}
            for rec in records:
                by_part.setdefault(partition_for(rec[0], nparts), []).append(rec)
            for p, recs in by_part.items():
                batch = prod.create_batch()
                for key, value in recs:
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        futures.append(await prod.send_batch(batch, topic, partition=p))
                        batch = prod.create_batch()
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            raise ValueError(f"record larger than max_batch_bytes on {topic}")
                futures.append(await prod.send_batch(batch, topic, partition=p))
        for f in futures:
            await f
        self.appended += len(records)

    async def sync(self) -> None:
        """Nothing to do: every append returned after acks=all."""

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        return KafkaConsumer(self, group, list(topics))

    def statistics(self) -> dict[str, Any]:
        return {"appended": self.appended}


def _topic_configs(t: TopicSpec) -> dict[str, str]:
    cfg = {"retention.ms": "-1" if t.retention_s is None else str(int(t.retention_s * 1000))}
    cfg["retention.bytes"] = "-1" if t.retention_bytes is None else str(t.retention_bytes)
    return cfg


class KafkaConsumer:
    """A consumer-group member with manual commits (started on first use)."""

    def __init__(self, log_: KafkaLog, group: str, topics: list[str]) -> None:
        self._log = log_
        self.group = group
        self.topics = topics
        self._c: AIOKafkaConsumer | None = None
        self._seeks: dict[TP, int] = {}

    async def _consumer(self) -> AIOKafkaConsumer:
        if self._c is None:
            c = AIOKafkaConsumer(
                *self.topics,
                bootstrap_servers=self._log.bootstrap_servers,
                group_id=self.group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id=self._log.client_id,
            )
            await c.start()
            self._c = c
        return self._c

    async def fetch(self, max_records: int = 1000, timeout: float = 1.0) -> list[LogRecord]:
        c = await self._consumer()
        deadline = anyio.current_time() + timeout
        while True:
            if self._seeks:
                assigned = c.assignment()
                for (t, p), off in list(self._seeks.items()):
                    tp = TopicPartition(t, p)
                    if tp in assigned:
                        c.seek(tp, off)
                        del self._seeks[(t, p)]
            left = deadline - anyio.current_time()
            got = await c.getmany(
                timeout_ms=max(0, int(min(left, 0.2) * 1000)), max_records=max_records
            )
            out = [log_record(r) for recs in got.values() for r in recs]
            if out or anyio.current_time() >= deadline:
                return out

    async def commit(self, offsets: dict[TP, int]) -> None:
        c = await self._consumer()
        await c.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Applied at the next fetch once the partition is assigned to this member."""
        self._seeks[(topic, partition)] = offset

    async def close(self) -> None:
        if self._c is not None:
            c, self._c = self._c, None
            await stop_client(c)
