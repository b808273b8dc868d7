"""Records that travel through the log.

msgspec Structs are the one source of truth for every record; the Avro schemas
on the log are derived from them (see ``actors/log``). Times are integer
nanoseconds since the Unix epoch.
"""

from __future__ import annotations

import enum
import time

import msgspec


class Quality(enum.Enum):
    """How far a value can be trusted, worst last."""

    GOOD = "GOOD"
    SUSPECT = "SUSPECT"
    UNCERTAIN = "UNCERTAIN"
    BAD = "BAD"


class Classification(enum.Enum):
    """What a point means to the plant: a sample, a state change, or an alarm bit."""

    TELEMETRY = "TELEMETRY"
    EVENT = "EVENT"
    ALARM = "ALARM"


Value = float | int | bool | str


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    """One value of one parameter of one asset, as a device session read it.

    ``device_time`` is the source's own timestamp when it has one; analytics use
    it. When it is missing the validator falls back to ``gateway_time`` and marks
    the reading UNCERTAIN. ``seq`` increases per adapter so a checker can tell a
    gap (a lost reading) from a duplicate.
    """

    asset_id: str
    parameter: str
    value: Value | None
    unit: str = ""
    quality: Quality = Quality.GOOD
    classification: Classification = Classification.TELEMETRY
    device_time: int | None = None
    gateway_time: int
    clock_skew_ms: int | None = None
    seq: int = 0
    adapter_id: str = ""
    adapter_version: str = ""


def now_ns() -> int:
    """Wall-clock time in integer nanoseconds, the unit of every record time."""
    return time.time_ns()
