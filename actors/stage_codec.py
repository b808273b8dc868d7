"""The log codec as the processing stages and sinks use it: encode and decode by topic.

``LogCodec`` joins the log's ``Codec`` (writer schemas registered once per
topic in ``prepare``; encoding does no I/O) and ``Decoder`` (sync decode of
known schema ids; ``decode_async`` fetches an unknown id from the schema
store first). Stage actors call ``prepare`` for their output topics in
``main`` (the registry may be remote), never in ``setup``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from otgate.actors.log import avro
from otgate.actors.log.publisher import Codec, Decoder
from otgate.actors.log.schemas import SchemaStore, SchemaUnavailable
from otgate.actors.log.topics import record_type


class LogCodec:
    """``encode(topic, obj)``, ``decode(topic, value)``, ``decode_async``, ``prepare``."""

    def __init__(self, schemas: SchemaStore) -> None:
        self._codec = Codec(schemas)
        self._decoder = Decoder(schemas)
        self._headers: dict[str, bytes] = {}

    async def prepare(self, topics: Iterable[str]) -> None:
        """Register (or load from the cache) each topic's current writer schema."""
        for t in topics:
            if t not in self._headers:
                self._headers[t] = avro.wire_header(await self._codec.prepare(t))

    def passthrough(self, src_topic: str, dst_topic: str, value: bytes) -> bytes | None:
        """``value`` re-headed for ``dst_topic`` without decoding and encoding again.

        Only when it was written with ``src_topic``'s current schema and both
        topics carry the same record type (e.g. an unchanged reading going from
        ``telemetry.raw`` to ``telemetry.clean``); None otherwise. Both topics
        must have been prepared.
        """
        src = self._headers.get(src_topic)
        dst = self._headers.get(dst_topic)
        if src is None or dst is None or value[:5] != src:
            return None
        if record_type(src_topic) is not record_type(dst_topic):
            return None
        return dst + value[5:]

    def encode(self, topic: str, obj: Any) -> bytes:
        return self._codec.encode(topic, obj)

    def decode(self, topic: str, value: bytes) -> Any:
        """Raises ``SchemaUnavailable`` for an id not loaded yet (use ``decode_async``)."""
        return self._decoder.decode(topic, value)

    async def decode_async(self, topic: str, value: bytes) -> Any:
        return await self._decoder.decode_async(topic, value)


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
