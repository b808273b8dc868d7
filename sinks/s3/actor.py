"""The S3 archive sink actor: log topics → Parquet objects, at-least-once.

It runs on the shared ``LogSink`` loop; a batch is a rolled file (closed by
count, bytes or time, see the config). The batch is decoded, split by
(topic, log partition, hour of the log time), each part written as one
Parquet file (in a worker thread: encoding is CPU work the event loop should
not wait on) and uploaded in one PUT; the offsets are committed only once
every object of the batch is stored.

Object keys name the part's first offset only (topic, hour, partition, first
offset), so a replay never archives a row twice: a batch retried after a
failed upload, or replayed after a crash between the uploads and the commit,
starts at the same committed offset, so each of its parts starts at the same
record as before — the first record of that hour at or after it — and
overwrites the object of the earlier attempt; where a replayed batch ends
sooner, the rows it no longer holds are gone from that object and are
written by the next batch under their own first offset. A crash can never
leave a partial object or skip a record.

Records that cannot be decoded (``undecodable``) or whose values do not fit
the file schema (``unconvertible``) are dead-lettered with the reason.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

import anyio

from otgate.actors.log.base import LogBackend, LogRecord
from otgate.actors.log.topics import record_type
from otgate.actors.records import DeadLetter
from otgate.actors.validator.actor import DECODE_ERRORS
from otgate.sinks.base import LogSink, describe_error, log
from otgate.sinks.outcome import Outcome
from otgate.sinks.s3.client import ArchiveClient, is_retriable
from otgate.sinks.s3.columnar import AvroColumns, available
from otgate.sinks.s3.config import S3Sink
from otgate.sinks.s3.parquet import (
    CONVERT_ERRORS,
    ROW_HELPERS,
    row_expression,
    table_from_rows,
    to_parquet,
    write,
)

HOUR_NS = 3600 * 1_000_000_000
Item = tuple[LogRecord, Any]


class S3SinkActor(LogSink):
    """One bucket behind its own circuit breaker (see the module doc)."""

    kind = "sink.s3"
    event = "s3_sink"

    def __init__(
        self,
        actor_id: str,
        config: S3Sink,
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
        self.gateway_id = gateway_id or "otgate"
        self.client = ArchiveClient(config)
        self._hours: dict[int, str] = {}
        self._columnar_ok = available()
        self._columns: AvroColumns | None = None  # made on first use (the import is slow)

    def object_key(self, topic: str, partition: int, hour: int, first_offset: int) -> str:
        path = self._hours.get(hour)
        if path is None:
            t = time.gmtime(hour * 3600)
            path = self._hours[hour] = time.strftime("date=%Y-%m-%d/hour=%H", t)
        return (f"{self.config.prefix}{topic}/{path}/"
                f"{self.gateway_id}-p{partition}-{first_offset:020d}.parquet")

    async def prepare(self, batch: list[LogRecord]) -> tuple[list[tuple[str, bytes]],
                                                             list[DeadLetter]]:
        """The batch's objects ``(key, Parquet bytes)`` and its refused records (DLQ);
        done ahead with prefetch, while the previous batch uploads.

        Fast paths, when the values carry their topic's current schema: the part's
        columns straight from the Avro bytes by a native reader (``columnar``),
        else each row from the bytes (``row_expression``); any other value, or a
        part whose rows do not convert, takes the object path (decode, then
        ``to_parquet`` / ``_encode``)."""
        parts: dict[tuple[str, int, int], list[LogRecord]] = {}
        for rec in batch:
            parts.setdefault((rec.topic, rec.partition, rec.timestamp_ns // HOUR_NS),
                             []).append(rec)
        files: list[tuple[str, bytes]] = []
        dead: list[DeadLetter] = []
        for (topic, partition, hour), recs in parts.items():
            data = None
            if self._columnar(topic, recs):
                data = await self._encode_columns(topic, partition, recs)
            rows = self._rows(topic, recs) if data is None else None
            if rows is not None:
                data = await anyio.to_thread.run_sync(self._encode_rows, topic, partition, recs,
                                                      rows)
            if data is None:
                items, undecodable = await self.decode_batch(recs)
                dead += undecodable
                if not items:
                    continue
                data, refused = await anyio.to_thread.run_sync(self._encode, items)
                dead += refused
                recs = [rec for rec, _ in items]
                if data is None:
                    continue
            files.append((self.object_key(topic, partition, hour, recs[0].offset), data))
        return files, dead

    async def deliver(self, batch: list[LogRecord]) -> tuple[Outcome, str]:
        """Upload one batch's files; DELIVERED (refused records dead-lettered) or
        ERRORED with the reason."""
        files, dead = self.prepared(batch) or await self.prepare(batch)
        for key, data in files:
            try:
                await self.client.put(key, data)
            except Exception as exc:
                if not is_retriable(exc):
                    raise
                return Outcome.ERRORED, describe_error(exc)
        await self.dead_letter(dead)
        return Outcome.DELIVERED, ""

    def _columnar(self, topic: str, recs: list[LogRecord]) -> bool:
        """True when ``recs``' first value has its topic's current schema, which is its
        record type's own (the codec's fast-path condition), and the reader is there."""
        decoder_for = getattr(self.codec, "decoder_for", None)
        value = recs[0].value
        return (self._columnar_ok and not AvroColumns.stuck and decoder_for is not None
                and record_type(topic) is not None and len(value) > 5 and value[0] == 0
                and decoder_for(topic, value) is not None)

    async def _encode_columns(self, topic: str, partition: int,
                              recs: list[LogRecord]) -> bytes | None:
        """The file of ``recs`` from the native reader's columns; None: the other paths.

        A body with stray bytes after its record (not a value this gateway writes)
        can keep the reader (DataFusion 55) looping for good: after ``read_timeout``
        the sink leaves that thread behind, stops using the reader in this process
        (``AvroColumns.stuck``) and takes the per-record paths, which dead-letter
        the record at fault; the looping thread costs a core until a restart."""
        tp = record_type(topic)
        if tp is None:
            return None
        if self._columns is None:
            self._columns = await anyio.to_thread.run_sync(AvroColumns, self.config.batch_size)
        with anyio.move_on_after(self._columns.read_timeout(len(recs))):
            got = await anyio.to_thread.run_sync(self._columns.table, topic, partition, recs,
                                                 tp, abandon_on_cancel=True)
            return None if got is None else await anyio.to_thread.run_sync(
                write, got, self.config.compression.value)
        AvroColumns.stuck = True
        log.error("s3_sink_columnar_stuck sink_id=%s topic=%s partition=%d first_offset=%d "
                  "records=%d: the native Avro reader did not finish; per-record decoding "
                  "from now on (restart to free the core it holds)", self.sink_id, topic,
                  partition, recs[0].offset, len(recs))
        return None

    def _rows(self, topic: str, recs: list[LogRecord]) -> list[tuple] | None:
        """Data rows of ``recs`` straight from the bytes, or None (object path)."""
        row_decoder = getattr(self.codec, "row_decoder", None)
        tp = record_type(topic)
        expr = row_expression(tp) if tp is not None and row_decoder is not None else None
        if expr is None:
            return None
        rows = []
        fn = None
        header = b""
        try:
            for rec in recs:
                value = rec.value
                if value[:5] != header:
                    fn = row_decoder(topic, value, expr, ROW_HELPERS)
                    if fn is None:
                        return None  # not the current schema (or not loaded yet)
                    header = value[:5]
                rows.append(fn(value, 5))
        except (*DECODE_ERRORS, struct.error):
            return None  # the object path says which records are at fault
        return rows

    def _encode_rows(self, topic: str, partition: int, recs: list[LogRecord],
                     rows: list[tuple]) -> bytes | None:
        """The file of rows from ``_rows``; None when a value does not fit (object path)."""
        try:
            return write(table_from_rows(topic, partition, recs, rows, record_type(topic)),
                         self.config.compression.value)
        except CONVERT_ERRORS:
            return None

    def _encode(self, part: list[Item]) -> tuple[bytes | None, list[DeadLetter]]:
        """The file of ``part``; records whose values do not fit are left out (DLQ)."""
        compression = self.config.compression.value
        try:
            return to_parquet(part, compression), []
        except CONVERT_ERRORS:
            pass
        good, dead = [], []
        for rec, obj in part:  # rare: find the records at fault one by one
            try:
                to_parquet([(rec, obj)], compression)
                good.append((rec, obj))
            except CONVERT_ERRORS as exc:
                dead.append(self.dead_record(rec, obj, "unconvertible", describe_error(exc)))
        return (to_parquet(good, compression) if good else None), dead

    def metrics(self) -> dict[str, float]:
        m = super().metrics()
        m.update({"uploads_total": float(self.client.uploads),
                  "uploaded_bytes_total": float(self.client.uploaded_bytes),
                  "upload_seconds_total": self.client.upload_s})
        return m
