"""A msgpack codec by topic for the stage tests (the log's Avro codec has the same shape)."""

from __future__ import annotations

from typing import Any

import msgspec

from otgate.actors.records import Aggregate, DeadLetter, Reading


def record_type(topic: str) -> type:
    if topic.startswith("dlq."):
        return DeadLetter
    if topic.startswith("telemetry.1"):
        return Aggregate
    return Reading


class MsgpackCodec:
    """``encode(topic, record) -> bytes`` / ``decode(topic, value) -> Struct``."""

    def __init__(self) -> None:
        self._enc = msgspec.msgpack.Encoder()
        self._dec: dict[type, msgspec.msgpack.Decoder] = {}

    def encode(self, topic: str, record: Any) -> bytes:
        return self._enc.encode(record)

    def decode(self, topic: str, value: bytes) -> Any:
        tp = record_type(topic)
        dec = self._dec.get(tp)
        if dec is None:
            dec = self._dec[tp] = msgspec.msgpack.Decoder(tp)
        return dec.decode(value)

    async def decode_async(self, topic: str, value: bytes) -> Any:
        return self.decode(topic, value)
