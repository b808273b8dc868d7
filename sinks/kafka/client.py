"""Producing one batch to the remote cluster, and which failures a retry can cure.

``send`` groups the records by remote (topic, partition) — the partition of
the key by Kafka's murmur2, so the remote agrees with any Kafka producer —
and sends each group as whole producer batches (acks=all). A broker appends
a producer batch entirely or not at all, and every batch of one attempt is
settled (acknowledged or failed) before ``send`` returns or raises, so a
retried attempt never overtakes a stray batch of the one before: the remote
sees each key's records in order, a failed attempt at worst as a repeated
run of them (deduplicable by the ``otgate-source`` header).

Retriable (whitelist): connection errors, timeouts (also waiting for
metadata while the cluster is away) and broker errors aiokafka marks
retriable (leader moves, unknown topic while it is being created). A record
larger than a producer batch, or a batch the broker refuses as too large, is
refused for good (dead-lettered). A SASL login the remote refuses is
retriable too (``LoginRefused``, named as such): the breaker opens and lag
grows until the secret or the remote's user is fixed, nothing is lost.
Anything else (authorization, bad config) fails the actor.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2

from otgate.actors.log.base import LogRecord
from otgate.sinks.kafka.config import KafkaSink, SecurityProtocol

TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)


class LoginRefused(ConnectionError):
    """The remote cluster refused the SASL login (unknown user, wrong password)."""


def login_refused(config: KafkaSink, exc: BaseException) -> LoginRefused | None:
    """What a failed producer start means, when it was the SCRAM exchange.

    A broker that refuses a SCRAM login with a server error (RFC 5802 ``e=…``:
    unknown user, bad proof) makes aiokafka's authenticator fail on the missing
    signature: a bare ``KeyError('v')`` or ``ValueError`` out of
    ``process_server_final_message``; name it for the operator instead.
    """
    if not config.security_protocol.value.startswith("SASL"):
        return None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name.startswith("process_server_"):
            return LoginRefused(
                f"SASL {config.sasl_mechanism.value} login as {config.sasl_username!r} refused "
                f"by {','.join(config.bootstrap_servers)} (unknown user or wrong password)")
        tb = tb.tb_next
    return None


def is_retriable(exc: BaseException) -> bool:
    """The whitelist (see the module doc)."""
    if isinstance(exc, (KafkaConnectionError, KafkaTimeoutError, ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, KafkaError) and bool(exc.retriable)


def producer_kwargs(config: KafkaSink) -> dict[str, Any]:
    """``AIOKafkaProducer`` arguments: acks=all, compression, TLS and SASL from the config."""
    kw: dict[str, Any] = dict(
        bootstrap_servers=config.bootstrap_servers, client_id=config.client_id, acks="all",
        enable_idempotence=config.idempotence,
        compression_type=None if config.compression.value == "none" else config.compression.value,
        max_batch_size=config.max_batch_bytes,
        max_request_size=max(config.max_batch_bytes * 4, 1024 * 1024),
        request_timeout_ms=int(config.request_timeout_s * 1000),
        security_protocol=config.security_protocol.value,
    )
    if config.security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
        kw["ssl_context"] = create_ssl_context(cafile=config.ca_file or None,
                                               certfile=config.cert_file or None,
                                               keyfile=config.key_file or None)
    if config.security_protocol.value.startswith("SASL"):
        kw.update(sasl_mechanism=config.sasl_mechanism.value,
                  sasl_plain_username=config.sasl_username,
                  sasl_plain_password=config.sasl_password)
    return kw


class Built:
    """One batch's producer batches by remote (topic, partition), and the records
    refused while building; sent at most once (a retry builds anew)."""

    __slots__ = ("generation", "groups", "refused", "sent")

    def __init__(self, groups: dict[tuple[str, int], list[tuple[Any, list[LogRecord]]]],
                 refused: list[tuple[LogRecord, str]], generation: int) -> None:
        self.groups = groups
        self.refused = refused
        self.generation = generation
        self.sent = False


class ReplicaClient:
    """One producer to the remote cluster (started on first use, dropped after a failure)."""

    def __init__(self, config: KafkaSink, gateway_id: str) -> None:
        self.config = config
        self.gateway = gateway_id.encode()
        self.producer: AIOKafkaProducer | None = None
        self.topics: dict[str, str] = {}  # local -> remote name
        self.partitions: dict[str, list[int]] = {}  # remote topic -> its partitions
        self.key_partition: dict[str, dict[bytes, int]] = {}  # remote topic -> key -> partition
        self.connects = 0
        self.producer_batches = 0
        self.generation = 0  # bumped by reset(): batches built before are stale

    @property
    def connected(self) -> bool:
        return self.producer is not None

    async def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            p = AIOKafkaProducer(**producer_kwargs(self.config))
            try:
                await p.start()
            except BaseException as exc:
                await p.stop()
                refused = login_refused(self.config, exc)
                if refused is not None:
                    raise refused from exc
                raise
            self.producer = p
            self.connects += 1
        return self.producer

    async def _route(self, producer: AIOKafkaProducer, local: str) -> tuple[str, list[int]]:
        """Remote topic and its partitions for a local topic (metadata cached)."""
        topic = self.topics.get(local)
        if topic is None:
            topic = self.topics[local] = self.config.remote_topic(local)
        parts = self.partitions.get(topic)
        if parts is None:
            parts = self.partitions[topic] = sorted(await producer.partitions_for(topic))
        return topic, parts

    @staticmethod
    def _groups(groups: dict[tuple[str, int], Any], topic: str) -> dict[int, Any]:
        """``groups``' producer batch lists of remote ``topic`` by partition."""
        return {part: bs for (t, part), bs in groups.items() if t == topic}

    async def send(self, records: list[LogRecord],
                   built: Built | None = None) -> list[tuple[LogRecord, str]]:
        """Replicate ``records`` (see the module doc); returns those refused for good
        with the reason; raises when the attempt failed (nothing to commit).
        ``built``: this batch's ``build_ahead``, used once and only while the
        producer it was built for is still the one in use."""
        producer = await self._producer()
        if built is None or built.generation != self.generation or built.sent:
            routes = {t: await self._route(producer, t) for t in {r.topic for r in records}}
            built = self._build(producer, records, routes)
        built.sent = True
        groups, refused = built.groups, list(built.refused)
        rounds = max((len(b) for b in groups.values()), default=0)
        for r in range(rounds):  # a key's later batch only after its earlier one is acked
            sent = [(bs[r][1], await producer.send_batch(bs[r][0], topic, partition=part))
                    for (topic, part), bs in groups.items() if r < len(bs)]
            results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
            self.producer_batches += len(sent)
            failure: BaseException | None = None
            for (recs, _), res in zip(sent, results, strict=True):
                if isinstance(res, TOO_LARGE):
                    refused += [(rec, f"{type(res).__name__}: {res}") for rec in recs]
                elif isinstance(res, BaseException):
                    failure = failure or res
            if failure is not None:
                raise failure
        return refused

    def build_ahead(self, records: list[LogRecord]) -> Built | None:
        """The producer batches of ``records``, built before their turn (while the
        batch before is out) when the producer and every route are known; else None."""
        producer = self.producer
        if producer is None:
            return None
        routes = {}
        for t in {r.topic for r in records}:
            topic = self.topics.get(t)
            parts = self.partitions.get(topic) if topic is not None else None
            if parts is None:
                return None
            routes[t] = (topic, parts)
        return self._build(producer, records, routes)

    def _build(self, producer: AIOKafkaProducer, records: list[LogRecord],
               routes: dict[str, tuple[str, list[int]]]) -> Built:
        """Group ``records`` by remote (topic, partition) into whole producer batches,
        each record with its two headers; too-large records refused."""
        groups: dict[tuple[str, int], list[tuple[Any, list[LogRecord]]]] = {}
        refused: list[tuple[LogRecord, str]] = []
        limit = self.config.max_batch_bytes
        gateway = ("otgate-gateway", self.gateway)
        source = ""  # (local topic, partition) of the records in hand, and their ...
        src = b""  # ... header prefix, remote topic, partitions, key -> partition and
        for rec in records:  # remote partition -> producer batches
            if (rec.topic, rec.partition) != source:
                source = (rec.topic, rec.partition)
                src = f"{rec.topic}/{rec.partition}/".encode()
                topic, parts = routes[rec.topic]
                keys = self.key_partition.setdefault(topic, {})
                out = self._groups(groups, topic)
            key, value = rec.key, rec.value
            if len(value) + (len(key) if key is not None else 0) > limit:
                refused.append((rec, f"RecordTooLarge: over max_batch_bytes={limit}"))
                continue
            if key is None:
                part = parts[rec.partition % len(parts)]
            else:
                part = keys.get(key)
                if part is None:
                    part = keys[key] = parts[(murmur2(key) & 0x7FFFFFFF) % len(parts)]
            builders = out.get(part)
            if builders is None:
                builders = out[part] = groups[(topic, part)] = []
            ts = rec.timestamp_ns // 1_000_000
            headers = [gateway, ("otgate-source", b"%s%d" % (src, rec.offset))]
            if builders and builders[-1][0].append(timestamp=ts, key=key, value=value,
                                                   headers=headers) is not None:
                builders[-1][1].append(rec)
                continue
            b = producer.create_batch()  # an empty batch takes any record
            b.append(timestamp=ts, key=key, value=value, headers=headers)
            builders.append((b, [rec]))
        return Built(groups, refused, self.generation)

    async def reset(self) -> None:
        """Drop the producer and the cached metadata (after a failed attempt)."""
        self.generation += 1
        self.partitions.clear()
        self.key_partition.clear()
        await self.close()

    async def close(self) -> None:
        if self.producer is not None:
            p, self.producer = self.producer, None
            await p.stop()
