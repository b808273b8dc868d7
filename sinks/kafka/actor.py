"""The Kafka replication sink actor: log topics → a remote cluster, at-least-once.

It runs on the shared ``LogSink`` loop: a batch is replicated
(``ReplicaClient.send``: keys, values, timestamps kept, ``otgate-gateway`` and
``otgate-source`` headers added, acks=all) and the local offsets are
committed only once every record of it is acknowledged by the remote. While
the remote cluster is away the breaker opens, nothing is fetched and the log
keeps the data (``lag_records`` grows); after it returns the same batch is
sent again, in order. A failed attempt can leave part of a batch on the
remote, so the remote can see a run of records twice: consumers there drop
a record whose (``otgate-gateway``, ``otgate-source``) they already have.
Records the remote refuses for good (too large) are dead-lettered with the
reason (``rejected_by_destination``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio

from otgate.actors.log.base import LogBackend, LogRecord
from otgate.sinks.base import LogSink, describe_error
from otgate.sinks.kafka.client import ReplicaClient, is_retriable
from otgate.sinks.kafka.config import KafkaSink
from otgate.sinks.outcome import Outcome


class KafkaSinkActor(LogSink):
    """One remote cluster behind its own circuit breaker (see the module doc)."""

    kind = "sink.kafka"
    event = "kafka_sink"

    def __init__(
        self,
        actor_id: str,
        config: KafkaSink,
        log_backend: LogBackend,
        codec: Any,
        *,
        gateway_id: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = anyio.sleep,
    ) -> None:
        super().__init__(actor_id, log_backend=log_backend, codec=codec,
                         **config.sink_args(actor_id, clock=clock, sleep=sleep))
        self.config = config
        self.client = ReplicaClient(config, gateway_id)

    async def prepare(self, batch: list[LogRecord]) -> Any:
        """The producer batches, built while the batch before waits for its acks
        (None until the producer is connected and the routes are known)."""
        return self.client.build_ahead(batch)

    async def deliver(self, batch: list[LogRecord]) -> tuple[Outcome, str]:
        """Replicate one batch; DELIVERED (too-large records dead-lettered) or ERRORED."""
        try:
            refused = await self.client.send(batch, self.prepared(batch))
        except Exception as exc:
            if not is_retriable(exc):
                raise
            await self.client.reset()
            return Outcome.ERRORED, describe_error(exc)
        if refused:
            items, dead = await self.decode_batch([rec for rec, _ in refused])
            why = {(r.topic, r.partition, r.offset): e for r, e in refused}
            dead += [self.dead_record(rec, obj, "rejected_by_destination",
                                      why[(rec.topic, rec.partition, rec.offset)])
                     for rec, obj in items]
            await self.dead_letter(dead)
        return Outcome.DELIVERED, ""

    async def close_client(self) -> None:
        await self.client.close()

    def metrics(self) -> dict[str, float]:
        m = super().metrics()
        m.update({"connected": 1.0 if self.client.connected else 0.0,
                  "connects_total": float(self.client.connects),
                  "producer_batches_total": float(self.client.producer_batches)})
        return m
