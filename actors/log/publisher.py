"""Records onto the log and back: Avro in the Confluent wire format.

``Codec`` registers each topic's writer schema (derived from the topic's
record Struct) with the schema store once (``prepare``), then encodes with a
compiled encoder (no I/O). ``Decoder.decode`` reads any schema id it has seen;
``decode_async`` fetches unknown ids from the store first. Reading resolves the
writer schema to the current Struct's schema, so records written by an older
gateway (BACKWARD-compatible change) still decode.

``ReadingPublisher.publish`` is what device sessions call
(``BuildContext.publish``): readings go to ``telemetry.raw`` / ``events.raw``
/ ``alarms.raw`` by classification, keyed by ``asset_id``, and the call
returns once the log made them durable (it waits while the log pushes back).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from otgate.actors.log import avro
from otgate.actors.log.schemas import SchemaStore, SchemaUnavailable, subject_for
from otgate.actors.log.topics import RAW_TOPIC, record_type
from otgate.actors.records import Reading


class Codec:
    """Encoder for the topics a writer writes (``prepare`` each topic first)."""

    def __init__(self, schemas: SchemaStore) -> None:
        self.schemas = schemas
        self._enc: dict[str, tuple[Callable[[Any, bytes], bytes], bytes]] = {}

    async def prepare(self, topic: str, tp: type | None = None) -> int:
        """Register the topic's writer schema; returns its schema id."""
        tp = tp or record_type(topic)
        if tp is None:
            raise KeyError(f"no record type for topic {topic!r}; pass tp=")
        sid = await self.schemas.register(subject_for(topic), avro.avro_schema(tp))
        self._enc[topic] = (_encoder(tp), avro.wire_header(sid))
        return sid

    def encode(self, topic: str, obj: Any) -> bytes:
        enc, header = self._enc[topic]
        return enc(obj, header)

    def encode_many(self, topic: str, objs: Sequence[Any]) -> list[bytes]:
        enc, header = self._enc[topic]
        return [enc(o, header) for o in objs]


_ENCODERS: dict[type, Callable[[Any, bytes], bytes]] = {}


def _encoder(tp: type) -> Callable[[Any, bytes], bytes]:
    e = _ENCODERS.get(tp)
    if e is None:
        e = _ENCODERS[tp] = avro.compile_encoder(tp)
    return e


class Decoder:
    """Wire-format values back to Structs (see module docstring)."""

    def __init__(self, schemas: SchemaStore) -> None:
        self.schemas = schemas
        self._writers: dict[int, Any] = {}
        self._readers: dict[type, Any] = {}

    def decode(self, topic: str, value: bytes, tp: type | None = None) -> Any:
        """The record as its Struct (as a dict for topics without a known type).

        Raises SchemaUnavailable when the schema id was never loaded (use
        ``decode_async``) and WireFormatError for non-Avro values.
        """
        sid, body = avro.split_wire(value)
        writer = self._writers.get(sid)
        if writer is None:
            text = self.schemas.cached(sid)
            if text is None:
                raise SchemaUnavailable(f"schema id {sid} not loaded")
            writer = self._writers[sid] = avro.parse(text)
        tp = tp or record_type(topic)
        if tp is None:
            return avro.decode_body(body, writer)
        reader = self._readers.get(tp)
        if reader is None:
            reader = self._readers[tp] = avro.parse(avro.avro_schema(tp))
        return msgspec.convert(avro.decode_body(body, writer, reader), tp)

    async def decode_async(self, topic: str, value: bytes, tp: type | None = None) -> Any:
        sid, _ = avro.split_wire(value)
        if sid not in self._writers and self.schemas.cached(sid) is None:
            await self.schemas.get(sid)
        return self.decode(topic, value, tp)


class ReadingPublisher:
    """Device sessions' way onto the log (``BuildContext.publish``)."""

    def __init__(self, log: Any, schemas: SchemaStore) -> None:
        self.log = log
        self.codec = Codec(schemas)
        self._keys: dict[str, bytes] = {}
        self._encode: dict[str, tuple[Callable[[Any, bytes], bytes], bytes]] = {}
        self.published = 0

    async def start(self) -> None:
        """Register the raw topics' schemas (from the cache when the registry is down)."""
        for topic in RAW_TOPIC.values():
            await self.codec.prepare(topic, Reading)
        self._encode = {c: self.codec._enc[t] for c, t in RAW_TOPIC.items()}

    def encode(self, readings: Sequence[Reading]) -> dict[str, list[tuple[bytes, bytes]]]:
        """Group and encode readings by raw topic: ``{topic: [(key, value)]}``."""
        by_cls: dict[Any, list[tuple[bytes, bytes]]] = {c: [] for c in self._encode}
        keys = self._keys
        enc_by_cls = self._encode
        for r in readings:
            c = r.classification
            enc, header = enc_by_cls[c]
            key = keys.get(r.asset_id)
            if key is None:
                if len(keys) > 100_000:
                    keys.clear()
                key = keys[r.asset_id] = r.asset_id.encode()
            by_cls[c].append((key, enc(r, header)))
        return {RAW_TOPIC[c]: recs for c, recs in by_cls.items() if recs}

    async def publish(self, readings: list[Reading]) -> None:
        """Encode and durably append; returns once every reading is on the log.

        Cancellation: readings of a cancelled call may or may not be on the log
        (never half a record); a session that retries after a cancel may write
        duplicates, which the sinks' upserts absorb.
        """
        if not self._encode:
            raise RuntimeError("ReadingPublisher.publish before start()")
        for topic, recs in self.encode(readings).items():
            await self.log.append(topic, recs)
        self.published += len(readings)
