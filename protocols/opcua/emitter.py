"""Turn decoded point values into Readings and hand them to the log in batches.

Shared by the OPC UA and MQTT sessions (the MQTT package imports it from
here). One ``Emitter`` per adapter: it owns the adapter's ``seq`` counter, the
last value of every EVENT/ALARM point (those are emitted on change only) and
the pending batch. Nothing is dropped here: ``add`` only appends, ``flush``
awaits ``publish`` (which waits while the log pushes back).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from otgate.actors.records import Classification, Quality, Reading, Value, now_ns

Publish = Callable[[list[Reading]], Awaitable[None]]

_MISSING = object()


class PointMeta:
    """The identity and meaning of one configured point (what every Reading repeats)."""

    __slots__ = ("asset_id", "classification", "key", "on_change", "parameter", "unit")

    def __init__(
        self, asset_id: str, parameter: str, unit: str, classification: Classification
    ) -> None:
        self.asset_id = asset_id
        self.parameter = parameter
        self.unit = unit
        self.classification = classification
        self.key = (asset_id, parameter)
        self.on_change = classification is not Classification.TELEMETRY


def coerce_value(value: Any) -> tuple[Value | None, str | None]:
    """Map a protocol value onto a Reading value; return ``(value, reason)``.

    ``reason`` is set (and the caller marks the reading BAD) for NaN/inf and
    for types a Reading cannot carry (arrays, structures, bytes...).
    """
    if isinstance(value, bool):
        return value, None
    if isinstance(value, int):
        return value, None
    if isinstance(value, float):
        if math.isfinite(value):
            return value, None
        return None, "not_finite"
    if isinstance(value, str):
        return value, None
    if value is None:
        return None, "null"
    return None, f"unsupported_type:{type(value).__name__}"


class Emitter:
    """Builds Readings for one adapter and publishes them in batches of ``batch_max``."""

    def __init__(
        self,
        *,
        adapter_id: str,
        adapter_version: str,
        publish: Publish,
        batch_max: int = 1000,
    ) -> None:
        self.adapter_id = adapter_id
        self.adapter_version = adapter_version
        self._publish = publish
        self.batch_max = batch_max
        self.seq = 0
        self.pending: list[Reading] = []
        self._last: dict[tuple[str, str], tuple[Any, Quality]] = {}
        self.published = 0
        self.suppressed = 0
        self.bad = 0

    def add(
        self,
        point: PointMeta,
        value: Value | None,
        quality: Quality,
        device_time: int | None,
        gateway_time: int | None = None,
    ) -> bool:
        """Queue one reading; returns False when an unchanged EVENT/ALARM was suppressed."""
        if point.on_change:
            last = self._last.get(point.key, _MISSING)
            current = (value, quality)
            if last == current:
                self.suppressed += 1
                return False
            self._last[point.key] = current
        if quality is Quality.BAD:
            self.bad += 1
        self.seq += 1
        self.pending.append(
            Reading(
                asset_id=point.asset_id,
                parameter=point.parameter,
                value=value,
                unit=point.unit,
                quality=quality,
                classification=point.classification,
                device_time=device_time,
                gateway_time=gateway_time if gateway_time is not None else now_ns(),
                seq=self.seq,
                adapter_id=self.adapter_id,
                adapter_version=self.adapter_version,
            )
        )
        return True

    @property
    def full(self) -> bool:
        return len(self.pending) >= self.batch_max

    async def flush(self) -> int:
        """Publish everything pending (in slices of ``batch_max``); returns the count.

        Cancellation: a batch whose ``publish`` was cancelled stays pending
        (the log may or may not have it: at-least-once).
        """
        sent = 0
        while self.pending:
            batch = self.pending[: self.batch_max]
            await self._publish(batch)
            del self.pending[: len(batch)]
            sent += len(batch)
        self.published += sent
        return sent

    def forget_last(self) -> None:
        """Forget change-detection state, so the next value of every point is emitted."""
        self._last.clear()
