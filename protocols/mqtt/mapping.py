"""Decode MQTT messages into point values: topic matching, JSON paths, plain payloads.

Pure functions and small compiled objects, no I/O. A payload that does not
fit its mapping never raises: each affected point comes back BAD with a short
``reason`` (``invalid_json``, ``missing_field``, ``wrong_type``,
``not_finite``, ``not_a_number``...), so the session can log it and go on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec

from otgate.actors.records import Quality, Value
from otgate.protocols.mqtt.config import (
    MqttSource,
    MqttSubscription,
    PayloadFormat,
    TimeFormat,
    ValueType,
)
from otgate.protocols.opcua.emitter import PointMeta

_json_decode = msgspec.json.Decoder().decode
_TRUE = {"true", "1", "on", "yes"}
_FALSE = {"false", "0", "off", "no"}
_MAX_CACHED = 100_000  # topic → subscriptions and (asset, parameter) → PointMeta caches

Decoded = tuple[PointMeta, Value | None, Quality, str | None]
"""One point of one message: meta, value, quality, BAD reason (None when fine)."""


def topic_matches(levels: list[str], filt: list[str]) -> bool:
    """MQTT filter matching on pre-split levels ('+' one level, '#' the rest)."""
    if levels and levels[0].startswith("$") and filt and filt[0] in ("+", "#"):
        return False  # $SYS/... never matches a leading wildcard (MQTT 4.7.2)
    for i, f in enumerate(filt):
        if f == "#":
            return True
        if i >= len(levels):
            return False
        if f != "+" and f != levels[i]:
            return False
    return len(levels) == len(filt)


def _path(path: str) -> tuple[str | int, ...]:
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))


def lookup(doc: Any, path: tuple[str | int, ...]) -> tuple[Any, bool]:
    """Follow ``path`` into a decoded JSON document; ``(value, found)``."""
    cur = doc
    for key in path:
        if isinstance(cur, dict):
            if isinstance(key, int):
                key = str(key)
            if key not in cur:
                return None, False
            cur = cur[key]
        elif isinstance(cur, list) and isinstance(key, int):
            if key >= len(cur):
                return None, False
            cur = cur[key]
        else:
            return None, False
    return cur, True


def check_type(value: Any, vtype: ValueType) -> tuple[Value | None, str | None]:
    """Validate a decoded JSON value against the expected type."""
    if isinstance(value, bool):
        if vtype in (ValueType.BOOL, ValueType.ANY):
            return value, None
        return None, "wrong_type"
    if isinstance(value, int | float):
        if vtype not in (ValueType.NUMBER, ValueType.ANY):
            return None, "wrong_type"
        if isinstance(value, float) and not math.isfinite(value):
            return None, "not_finite"
        return value, None
    if isinstance(value, str):
        if vtype in (ValueType.STRING, ValueType.ANY):
            return value, None
        return None, "wrong_type"
    if value is None:
        return None, "null"
    return None, "wrong_type"


def parse_plain(body: bytes, vtype: ValueType) -> tuple[Value | None, str | None]:
    """Parse a whole-body value (``21.5``, ``42``, ``on``...)."""
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, "not_utf8"
    if vtype is ValueType.STRING:
        return text, None
    if vtype in (ValueType.NUMBER, ValueType.ANY):
        number = _number(text)
        if number is not None:
            if isinstance(number, float) and not math.isfinite(number):
                return None, "not_finite"
            return number, None
        if vtype is ValueType.NUMBER:
            return None, "not_a_number"
    low = text.lower()
    if low in _TRUE:
        return True, None
    if low in _FALSE:
        return False, None
    if vtype is ValueType.ANY:
        return text, None
    return None, "not_a_bool"


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def to_device_time(value: Any, fmt: TimeFormat) -> int | None:
    """A payload timestamp → ns since the epoch; None when absent or unreadable."""
    if fmt is TimeFormat.ISO8601:
        if not isinstance(value, str):
            return None
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if fmt is TimeFormat.EPOCH_S:
        return int(value * 1_000_000_000)
    if fmt is TimeFormat.EPOCH_MS:
        return int(value * 1_000_000)
    return int(value)


class CompiledSubscription:
    """One subscription, pre-split and pre-parsed for the hot path."""

    def __init__(self, sub: MqttSubscription) -> None:
        self.cfg = sub
        self.filter = sub.topic.split("/")
        self.json = sub.payload is PayloadFormat.JSON
        self.fields = [(_path(f.path), f) for f in sub.fields]
        self.time_path = _path(sub.time_path) if sub.time_path else None
        self._metas: dict[tuple[str, str], PointMeta] = {}

    def meta(self, asset_id: str, parameter: str, unit: str, classification: Any) -> PointMeta:
        key = (asset_id, parameter)
        meta = self._metas.get(key)
        if meta is None:
            meta = PointMeta(asset_id, parameter, unit, classification)
            if len(self._metas) < _MAX_CACHED:
                self._metas[key] = meta
        return meta

    def decode(
        self, levels: list[str], body: bytes
    ) -> tuple[list[Decoded], int | None, str | None]:
        """Values of one message → ``(points, device_time, message_reason)``.

        ``message_reason`` is set when the topic cannot be mapped at all
        (no points are returned then).
        """
        sub = self.cfg
        if sub.asset_id is not None:
            asset = sub.asset_id
        elif sub.asset_from_topic is not None and sub.asset_from_topic < len(levels):
            asset = levels[sub.asset_from_topic]
        else:
            return [], None, "no_asset_level"
        if not asset:
            return [], None, "empty_asset_level"
        if not self.json:
            if sub.parameter is not None:
                parameter = sub.parameter
            elif sub.parameter_from_topic is not None and sub.parameter_from_topic < len(levels):
                parameter = levels[sub.parameter_from_topic]
            else:
                return [], None, "no_parameter_level"
            value, reason = parse_plain(body, sub.type)
            meta = self.meta(asset, parameter, sub.unit, sub.classification)
            quality = Quality.GOOD if reason is None else Quality.BAD
            return [(meta, value, quality, reason)], None, None
        out: list[Decoded] = []
        try:
            doc = _json_decode(body)
        except msgspec.DecodeError:
            doc, doc_reason = None, "invalid_json"
        else:
            doc_reason = None if isinstance(doc, dict) else "not_an_object"
        device_time = None
        if doc_reason is None and self.time_path is not None:
            raw_time, found = lookup(doc, self.time_path)
            if found:
                device_time = to_device_time(raw_time, sub.time_format)
        for path, fld in self.fields:
            meta = self.meta(asset, fld.parameter, fld.unit, fld.classification)
            if doc_reason is not None:
                out.append((meta, None, Quality.BAD, doc_reason))
                continue
            raw, found = lookup(doc, path)
            if not found:
                out.append((meta, None, Quality.BAD, "missing_field"))
                continue
            value, reason = check_type(raw, fld.type)
            out.append((meta, value, Quality.GOOD if reason is None else Quality.BAD, reason))
        return out, device_time, None


class Router:
    """Finds the subscriptions a topic belongs to (cached per topic)."""

    def __init__(self, cfg: MqttSource) -> None:
        self.subs = [CompiledSubscription(s) for s in cfg.subscriptions]
        self._cache: dict[str, tuple[list[str], list[CompiledSubscription]]] = {}

    def route(self, topic: str) -> tuple[list[str], list[CompiledSubscription]]:
        hit = self._cache.get(topic)
        if hit is None:
            levels = topic.split("/")
            hit = (levels, [s for s in self.subs if topic_matches(levels, s.filter)])
            if len(self._cache) < _MAX_CACHED:
                self._cache[topic] = hit
        return hit

    def __iter__(self) -> Iterator[CompiledSubscription]:
        return iter(self.subs)
