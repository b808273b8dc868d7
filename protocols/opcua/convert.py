"""OPC UA DataValue → (value, quality, device_time): status codes, timestamps, types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from asyncua import ua

from otgate.actors.records import Quality, Value
from otgate.protocols.opcua.emitter import coerce_value

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
# OPC UA "null" DateTime (1601-01-01) and earlier mean "no timestamp".
_MIN_VALID = datetime(1970, 1, 2)


def quality_of(status: ua.StatusCode | None) -> Quality:
    """Severity bits (31..30) of a StatusCode: 00 Good, 01 Uncertain, 1x Bad."""
    if status is None:
        return Quality.GOOD
    severity = (status.value >> 30) & 0b11
    if severity == 0:
        return Quality.GOOD
    if severity == 1:
        return Quality.UNCERTAIN
    return Quality.BAD


def to_ns(ts: datetime | None) -> int | None:
    """A UTC datetime (naive or aware) → integer ns since the epoch; None when unset."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        if ts < _MIN_VALID:
            return None
        td = ts - _EPOCH_NAIVE
    else:
        td = ts - _EPOCH
        if td.days < 1:
            return None
    return ((td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds) * 1_000


def unpack(
    dv: ua.DataValue | None, use_source: bool
) -> tuple[Value | None, Quality, int | None, str | None]:
    """Decode one DataValue; ``reason`` explains a BAD quality that the gateway assigned."""
    if dv is None:
        return None, Quality.BAD, None, "no_value"
    quality = quality_of(dv.StatusCode)
    device_time = to_ns(dv.SourceTimestamp) if use_source else None
    if device_time is None:
        device_time = to_ns(dv.ServerTimestamp)
    variant = dv.Value
    raw: Any = variant.Value if variant is not None else None
    if isinstance(raw, ua.LocalizedText):  # text variables often use it
        raw = raw.Text
    if quality is Quality.BAD:
        return None, quality, device_time, None
    value, reason = coerce_value(raw)
    if reason is not None:
        return None, Quality.BAD, device_time, reason
    return value, quality, device_time, None
