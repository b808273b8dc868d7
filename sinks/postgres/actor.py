"""The PostgreSQL sink actor: log topics → tables, at-least-once, idempotent.

The loop is the shared ``LogSink`` (sinks/base.py): fetch a batch with the
sink's own consumer group → wait for the circuit breaker → write it (``PgClient.write``, one transaction per record
kind) → commit the log offsets only once the database committed
(``Delivered``). A retriable failure (``Errored``) keeps the same batch and
retries it with an exponential delay; after ``breaker_failures`` in a row the
breaker opens and the sink fetches nothing until a trial batch succeeds
after the cooldown, so the log keeps the data and ``lag_records`` grows.
Rows the database refuses as data errors are isolated by splitting the
batch, written to ``dlq_topic`` with the reason (``Rejected``) and then
committed; the rest of the batch is delivered. Any other error fails the
actor (its supervisor restarts it; nothing was committed, so nothing is lost).

Cancellation: a cancelled write is rolled back by the server; its offsets
were not committed, so the batch is written again after the restart (the
upsert absorbs it).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

import anyio

from otgate.actors import heap
from otgate.actors.log.base import LogBackend, LogRecord
from otgate.actors.log.schemas import SchemaUnavailable
from otgate.actors.records import DeadLetter
from otgate.actors.stage_codec import decode
from otgate.actors.validator.actor import DECODE_ERRORS
from otgate.sinks.base import LogSink
from otgate.sinks.base import describe_error as _describe
from otgate.sinks.outcome import Outcome
from otgate.sinks.postgres.client import (
    ROW_HELPERS,
    ROWS,
    PgClient,
    aggregate_row,
    is_data_error,
    is_retriable,
    reading_row,
)
from otgate.sinks.postgres.config import PostgresSink, topic_kind

Item = tuple[LogRecord, Any, tuple]  # source record, decoded record, table row


class _Retry(Exception):
    """A retriable error while isolating rejected rows."""


class PostgresSinkActor(LogSink):
    """One PostgreSQL destination behind its own circuit breaker (see module doc)."""

    kind = "sink.postgres"
    event = "postgres"

    def __init__(
        self,
        actor_id: str,
        config: PostgresSink,
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
        self.client = PgClient(config, gateway_id)
        self.kinds = {t: topic_kind(t) for t in config.topics}
        self.heap_trimmed = 0
        self.heap_trims = 0

    async def close_client(self) -> None:
        await self.client.close()

    async def caught_up(self) -> None:
        """Give the heap's free pages back after an outage's backlog (``heap.trim``).

        The catch-up's full batches (decoded rows, the log's unpacked batches,
        psycopg's COPY buffers) leave free chunks among live ones in glibc's
        arenas, which the steady small batches after it do not fill: the soak's
        ``pg`` bulkhead kept +1.2-2.4 MiB of RSS per PostgreSQL outage."""
        self.heap_trimmed += await anyio.to_thread.run_sync(heap.trim)
        self.heap_trims += 1

    async def deliver(self, batch: list[LogRecord]) -> tuple[Outcome, str]:
        """Write one batch; DELIVERED (rejected rows dead-lettered) or ERRORED with the reason."""
        groups: dict[str, list[Item]] = {"readings": [], "aggregates": []}
        dead: list[DeadLetter] = []
        row_decoder = getattr(self.codec, "row_decoder", None)
        for rec in batch:
            kind = self.kinds.get(rec.topic) or topic_kind(rec.topic)
            if kind in ROWS and row_decoder is not None:
                # fast path: the row straight from the bytes (obj decoded only if refused)
                try:
                    fn = row_decoder(rec.topic, rec.value, ROWS[kind], ROW_HELPERS)
                    if fn is not None:
                        groups[kind].append((rec, None, fn(rec.value, 5)))
                        continue
                except (*DECODE_ERRORS, struct.error):
                    pass  # the full decode below says what is wrong
            try:
                try:
                    obj = self.codec.decode(rec.topic, rec.value)
                except SchemaUnavailable:
                    obj = await self.codec.decode_async(rec.topic, rec.value)
                row = reading_row(obj) if kind == "readings" else aggregate_row(obj)
            except (*DECODE_ERRORS, AttributeError, SchemaUnavailable) as exc:
                dead.append(self.dead_record(rec, None, "undecodable", _describe(exc)))
                continue
            groups[kind or "readings"].append((rec, obj, row))
        for kind, items in groups.items():
            if not items:
                continue
            try:
                await self.client.write(kind, [row for _, _, row in items])
            except Exception as exc:
                if is_retriable(exc):
                    return Outcome.ERRORED, _describe(exc)
                if not is_data_error(exc):
                    raise
                try:
                    refused = await self._isolate(kind, items)
                except _Retry as r:
                    return Outcome.ERRORED, str(r)
                for rec, obj, err in refused:
                    if obj is None:  # written by the fast path: decode it for the DLQ
                        obj = await decode(self.codec, rec.topic, rec.value)
                    dead.append(self.dead_record(rec, obj, "rejected_by_database", err))
        await self.dead_letter(dead)
        return Outcome.DELIVERED, ""

    async def _isolate(self, kind: str, items: list[Item]) -> list[tuple[LogRecord, Any, str]]:
        """Split a refused batch until the refused rows are alone; write the rest."""
        if len(items) == 1:
            rec, obj, _ = items[0]
            try:
                await self.client.write(kind, [items[0][2]])
                return []
            except Exception as exc:
                if is_retriable(exc):
                    raise _Retry(_describe(exc)) from exc
                if not is_data_error(exc):
                    raise
                return [(rec, obj, _describe(exc))]
        mid = len(items) // 2
        out = []
        for part in (items[:mid], items[mid:]):
            try:
                await self.client.write(kind, [row for _, _, row in part])
            except Exception as exc:
                if is_retriable(exc):
                    raise _Retry(_describe(exc)) from exc
                if not is_data_error(exc):
                    raise
                out += await self._isolate(kind, part) if len(part) > 1 else [
                    (part[0][0], part[0][1], _describe(exc))
                ]
        return out

    def metrics(self) -> dict[str, float]:
        m = super().metrics()
        m.update({
            "connected": 1.0 if self.client.connected else 0.0,
            "connects_total": float(self.client.connects),
            "direct_copy_batches_total": float(self.client.direct_batches),
            "staged_batches_total": float(self.client.staged_batches),
            "heap_trims_total": float(self.heap_trims),
            "heap_trimmed_bytes_total": float(self.heap_trimmed),
        })
        return m
