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

from otgate.actors.log.publisher import Codec, Decoder
from otgate.actors.log.schemas import SchemaStore, SchemaUnavailable


class LogCodec:
    """``encode(topic, obj)``, ``decode(topic, value)``, ``decode_async``, ``prepare``."""

    def __init__(self, schemas: SchemaStore) -> None:
        self._codec = Codec(schemas)
        self._decoder = Decoder(schemas)
        self._prepared: set[str] = set()

    async def prepare(self, topics: Iterable[str]) -> None:
        """Register (or load from the cache) each output topic's writer schema."""
        for t in topics:
            if t not in self._prepared:
                await self._codec.prepare(t)
                self._prepared.add(t)

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
