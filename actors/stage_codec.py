"""The log codec as the processing stages and sinks use it: encode and decode by topic.

``LogCodec`` joins the log's ``Codec`` (writer schemas registered once per
topic in ``prepare``; encoding does no I/O) and ``Decoder`` (sync decode of
known schema ids; ``decode_async`` fetches an unknown id from the schema
store first). Stage actors call ``prepare`` for their output topics in
``main`` (the registry may be remote), never in ``setup``.

Fast path: decoding is the costliest step of every stage (fastavro with
schema resolution takes ~10 µs per Reading here). When a value's writer
schema is exactly the reader's (canonical JSON equal: the common case, the
same gateway version wrote it), ``stage_decoder.compile_decoder`` generates a
Python function for that flat record schema that builds the Struct directly.
Any other schema (an older writer, nested records) goes through the log's
``Decoder`` with full resolution.

Decode memo: stages in one bulkhead share one LogCodec. When a stage writes
values it already holds decoded (the validator passing raw readings on to
``*.clean`` unchanged), it ``remember``s them with the topic it writes to; the next ``decode`` of
exactly those bytes from that topic (the aggregator reading
``telemetry.clean``) returns the object instead of decoding again. Decoding
is a pure function of the bytes and the records are frozen, so this changes
nothing but the CPU spent. Bounded: two generations of ``MEMO_SIZE`` values
(plus one batch);
an entry is dropped when it is used or when it ages out (a lagging reader
then simply decodes).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

from otgate.actors.log import avro
from otgate.actors.log.publisher import Codec, Decoder
from otgate.actors.log.schemas import SchemaStore, SchemaUnavailable
from otgate.actors.log.topics import record_type
from otgate.actors.stage_decoder import compile_decoder


class LogCodec:
    """``encode(topic, obj)``, ``decode(topic, value)``, ``decode_async``, ``prepare``."""

    def __init__(self, schemas: SchemaStore) -> None:
        self._codec = Codec(schemas)
        self._decoder = Decoder(schemas)
        self._headers: dict[str, bytes] = {}
        self._pairs: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        self._schemas = schemas
        self._fast: dict[tuple[str, bytes], Callable[[bytes, int], Any] | None] = {}
        self._memo: dict[bytes, Any] = {}
        self._rows: dict[tuple[str, bytes, str], Any] = {}
        self._last_rows: dict[str, tuple[bytes, str, Any]] = {}
        self._memo_old: dict[bytes, Any] = {}
        self._memo_topics: set[str] = set()  # topics whose reads look in the memo
        self._last: dict[str, tuple[bytes, Any]] = {}  # topic -> (header, fast decoder)

    def remember(self, topic: str, values: list[bytes], objs: list[Any]) -> None:
        """Note that each of ``values`` (wire format), written to ``topic``, decodes to
        the frozen record at the same index of ``objs`` (one batch at a time)."""
        if topic not in self._memo_topics:
            self._memo_topics.add(topic)
        memo = self._memo
        memo.update(zip(values, objs, strict=True))
        if len(memo) >= MEMO_SIZE:
            self._memo_old, self._memo = memo, {}

    async def prepare(self, topics: Iterable[str]) -> None:
        """Register (or load from the cache) each topic's current writer schema."""
        for t in topics:
            if t not in self._headers:
                self._headers[t] = avro.wire_header(await self._codec.prepare(t))

    def passthrough(self, src_topic: str, dst_topic: str) -> tuple[bytes, bytes] | None:
        """``(src_header, dst_header)``: a value of ``src_topic`` that starts with
        ``src_header`` is written to ``dst_topic`` as ``dst_header + value[5:]``,
        without decoding and encoding again.

        Only when both topics carry the same record type (e.g. an unchanged
        reading going from ``telemetry.raw`` to ``telemetry.clean``): the header
        is ``src_topic``'s current schema; None otherwise. Both topics must
        have been prepared.
        """
        pair = self._pairs.get((src_topic, dst_topic))
        if pair is None:
            src = self._headers.get(src_topic)
            dst = self._headers.get(dst_topic)
            if src is None or dst is None or record_type(src_topic) is not record_type(dst_topic):
                return None
            pair = self._pairs[(src_topic, dst_topic)] = (src, dst)
        return pair

    def decoder_for(self, topic: str, value: bytes) -> Callable[[bytes, int], Any] | None:
        """``decode``'s fast path for a loop that checks the header itself: the
        compiled decoder of ``value``'s schema when it is the topic's current one
        (it then decodes every value with the same first 5 bytes), else None."""
        header = value[:5]
        fast = self._fast.get((topic, header), _MISSING)
        if fast is _MISSING:
            fast = self._fast_decoder(topic, value)
        return fast

    def encode(self, topic: str, obj: Any) -> bytes:
        return self._codec.encode(topic, obj)

    def decode(self, topic: str, value: bytes) -> Any:
        """Raises ``SchemaUnavailable`` for an id not loaded yet (use ``decode_async``)."""
        if topic in self._memo_topics:
            obj = self._memo.pop(value, None)
            if obj is None:
                obj = self._memo_old.pop(value, None)
            if obj is not None and type(obj) is record_type(topic):
                return obj
        header = value[:5]
        last = self._last.get(topic)
        if last is not None and last[0] == header:
            fast = last[1]  # the usual case: the topic's current writer schema
        else:
            fast = self._fast.get((topic, header), _MISSING)
            if fast is _MISSING:
                fast = self._fast_decoder(topic, value)
            elif fast is not None:
                self._last[topic] = (header, fast)
        if fast is None:
            return self._decoder.decode(topic, value)
        try:
            return fast(value, 5)
        except struct.error as exc:
            raise ValueError(f"truncated Avro value: {exc}") from exc

    def _fast_decoder(self, topic: str, value: bytes) -> Any:
        sid, _ = avro.split_wire(value)
        text = self._schemas.cached(sid)
        tp = record_type(topic)
        if text is None:
            return None  # not cached yet: the slow path loads it (do not remember)
        fast = None
        if tp is not None and avro.canonical(text) == avro.canonical(avro.avro_schema(tp)):
            try:
                fast = compile_decoder(tp)
            except TypeError:
                fast = None
        self._fast[(topic, value[:5])] = fast
        return fast

    async def decode_async(self, topic: str, value: bytes) -> Any:
        return await self._decoder.decode_async(topic, value)

    def row_decoder(
        self, topic: str, value: bytes, returns: str, helpers: dict[str, Any]
    ) -> Callable[[bytes, int], Any] | None:
        """A ``compile_decoder(..., returns)`` for ``value``'s schema when it is the
        topic's current one (the fast path's condition), else None: decode then."""
        header = value[:5]
        last = self._last_rows.get(topic)
        if last is not None and last[0] == header and last[1] is returns:
            return last[2]  # the usual case: the topic's current writer schema
        key = (topic, header, returns)
        fn = self._rows.get(key, _MISSING)
        if fn is _MISSING:
            fast = self._fast.get((topic, value[:5]), _MISSING)
            if fast is _MISSING:
                fast = self._fast_decoder(topic, value)
            if fast is None:
                return None  # not cached: the next call looks again
            tp = record_type(topic)
            fn = self._rows[key] = compile_decoder(tp, returns, helpers) if tp else None
        if fn is not None:
            self._last_rows[topic] = (header, returns, fn)
        return fn


async def decode(codec: Any, topic: str, value: bytes) -> Any:
    """Decode, loading an unknown schema id from the store when needed."""
    try:
        return codec.decode(topic, value)
    except SchemaUnavailable:
        return await codec.decode_async(topic, value)


async def prepare(codec: Any, topics: Iterable[str]) -> None:
    """``codec.prepare(topics)`` when the codec has one (test codecs need none)."""
    fn = getattr(codec, "prepare", None)
    if fn is not None:
        await fn(topics)


def stage_codec(ctx: Any) -> Any:
    """The codec of a bulkhead: ``ctx.extras['codec']``, else a LogCodec on its schemas."""
    codec = ctx.extras.get("codec")
    if codec is None:
        schemas = ctx.extras.get("schemas")
        if schemas is None:
            raise ValueError("BuildContext.extras needs 'codec' or 'schemas'")
        codec = ctx.extras["codec"] = LogCodec(schemas)
    return codec


_MISSING = object()
MEMO_SIZE = 10_000
"""Values per memo generation (two generations at most are kept)."""
