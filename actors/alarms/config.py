"""Alarm definitions and the evaluator's settings (``[processing.alarms]``).

A definition names a condition on the readings of the parameters and assets
it matches (fnmatch patterns): a limit (``high``, ``high_high``, ``low``,
``low_low``), a ``deviation`` from a setpoint, a ``rate`` of change, a
``boolean`` (or one bit of an integer: a device trip bit, an OPC UA
boolean), ``bad_quality`` for N seconds, or ``stale`` (no data for N
seconds). Every definition matching a stream (asset, parameter) makes one
alarm there, whose ``alarm_id`` is ``<asset>:<parameter>:<name>``.
"""

from __future__ import annotations

import enum
import string
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from otgate.actors.log.topics import record_type
from otgate.actors.records import AlarmSeverity, Reading
from otgate.config.base import Identifier, NonNegativeSeconds, PositiveSeconds, StrictStruct

if TYPE_CHECKING:
    from otgate.actors.context import BuildContext

Pattern = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=256, description="fnmatch pattern, e.g. 'pump-*'"),
]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
TEMPLATE_FIELDS = frozenset({"asset", "parameter", "name", "value", "limit", "unit"})


class _Definition(StrictStruct, kw_only=True, frozen=True):
    name: Identifier
    "Definition id, unique in the list; the last part of every alarm_id it makes."
    parameter: Pattern
    "Parameter name or fnmatch pattern ('temp*')."
    asset: Pattern = "*"
    "Asset id or fnmatch pattern."
    severity: AlarmSeverity = AlarmSeverity.MEDIUM
    "CRITICAL | HIGH | MEDIUM | LOW | INFO."
    message: str = "{asset} {parameter}: {name} ({value})"
    "Text of the alarm; {asset} {parameter} {name} {value} {limit} {unit} are filled in."
    on_delay_s: NonNegativeSeconds = 0.0
    "The condition must hold this long (device time) before the alarm raises."
    off_delay_s: NonNegativeSeconds = 0.0
    "The condition must stay clear this long (device time) before the alarm clears."
    latching: bool = False
    "Once raised, the alarm stays active after the condition clears until an operator resets it."
    suppressed_by: list[Identifier] = []
    "Names of definitions whose active alarm on the same asset suppresses this one by design "
    "(e.g. a trip suppresses the low-pressure alarm it causes)."
    owner: str = ""
    "Who answers this alarm (a team or a person), copied onto every transition."
    area: str = ""
    "Plant area, copied onto every transition (routing and filtering)."

    def limit_value(self) -> float | None:
        return None


class _Limit(_Definition, kw_only=True, frozen=True):
    limit: float
    "The alarm limit in the parameter's unit."
    deadband: NonNegative = 0.0
    "Hysteresis: the alarm clears only once the value is back past the limit by this much."

    def limit_value(self) -> float | None:
        return self.limit


class High(_Limit, tag="high", tag_field="kind"):
    """Active while the value is above ``limit``; clears at or below ``limit - deadband``."""


class HighHigh(_Limit, tag="high_high", tag_field="kind"):
    """As ``high``, for the second, more urgent limit."""


class Low(_Limit, tag="low", tag_field="kind"):
    """Active while the value is below ``limit``; clears at or above ``limit + deadband``."""


class LowLow(_Limit, tag="low_low", tag_field="kind"):
    """As ``low``, for the second, more urgent limit."""


class Deviation(_Limit, tag="deviation", tag_field="kind"):
    """Active while ``|value - setpoint| > limit``; clears at or below ``limit - deadband``.
    The setpoint is fixed, or the last value of another parameter of the same asset
    (a controller's SP): then a reading of the parameter is judged against the last
    setpoint read before it."""

    setpoint: float | None = None
    "The value the parameter should hold (or use setpoint_parameter)."
    setpoint_parameter: str | None = None
    "The parameter of the same asset that carries the setpoint (e.g. 'temp_sp')."

    def __post_init__(self) -> None:
        if (self.setpoint is None) == (self.setpoint_parameter is None):
            raise ValueError(f"definition {self.name!r}: set one of setpoint, setpoint_parameter")


class Rate(_Limit, tag="rate", tag_field="kind"):
    """Active while ``|change per second|`` between two readings (device time) exceeds
    ``limit``; clears at or below ``limit - deadband``."""


class Boolean(_Definition, tag="boolean", tag_field="kind"):
    """Active while the value is true (a trip bit, an OPC UA boolean), or ``bit`` of an
    integer value is set. Strings count as true when they read 1/true/on/yes/active."""

    bit: Annotated[int, msgspec.Meta(ge=0, le=63)] | None = None
    "Test this bit of an integer value instead of the whole value."
    active_when: bool = True
    "false: the alarm is active while the value (or bit) is false (e.g. a 'healthy' bit)."


class BadQuality(_Definition, tag="bad_quality", tag_field="kind"):
    """Active once the readings have been BAD for ``for_s`` seconds; clears with the
    first reading that is not BAD."""

    for_s: PositiveSeconds = 10.0
    "Seconds of continuous BAD quality before the alarm raises."


class Stale(_Definition, tag="stale", tag_field="kind"):
    """Active once no reading came for ``for_s`` seconds (gateway clock); clears with the
    next reading. A stream named exactly (no pattern) is expected from the start; a
    pattern watches the streams it has seen."""

    for_s: PositiveSeconds = 60.0
    "Seconds without a reading before the alarm raises."


AlarmDefinition = High | HighHigh | Low | LowLow | Deviation | Rate | Boolean | BadQuality | Stale
"""Any alarm definition; TOML selects one with ``kind = "..."``."""


class Unmatched(enum.Enum):
    """What a reading on ``alarms.raw`` that no definition matches does."""

    ALARM = "alarm"  # a boolean alarm named "device" with ``device_alarm_severity``
    IGNORE = "ignore"  # nothing (it stays in alarms.raw)


class HealthLimits(StrictStruct):
    """Alarm-management limits (ISA-18.2 / EEMUA 191 practice) behind the health metrics."""

    flood_alarms: Annotated[int, msgspec.Meta(ge=1)] = 10
    "More new alarms than this within flood_window_s is an alarm flood."
    flood_window_s: PositiveSeconds = 600.0
    "Window of the alarm rate and of flood detection."
    chatter_count: Annotated[int, msgspec.Meta(ge=2)] = 3
    "The same alarm raised this many times within chatter_window_s is chattering."
    chatter_window_s: PositiveSeconds = 60.0
    "Window of chatter detection."
    stale_after_s: PositiveSeconds = 86400.0
    "An alarm active longer than this is stale (standing)."
    shelved_too_long_s: PositiveSeconds = 8 * 3600.0
    "An alarm shelved longer than this (re-shelving included) is reported."


class AlarmsConfig(StrictStruct):
    """The alarm evaluator: definitions → ISA-18.2 lifecycle on ``alarms.clean``."""

    enabled: bool = True
    "Run the alarm evaluator stage."
    group: Identifier = "alarms"
    "Consumer group on the inputs and on alarms.commands."
    inputs: list[str] = msgspec.field(
        default_factory=lambda: ["telemetry.clean", "events.clean", "alarms.raw"]
    )
    "Topics whose readings are evaluated."
    definitions: list[AlarmDefinition] = []
    "Alarm definitions; every definition matching a stream makes one alarm on it."
    unmatched_raw: Unmatched = Unmatched.ALARM
    "What an alarms.raw reading that no definition matches does."
    device_alarm_severity: AlarmSeverity = AlarmSeverity.HIGH
    "Severity of the alarms made for unmatched alarms.raw readings."
    default_shelve_s: PositiveSeconds = 3600.0
    "Shelving time when a shelve command gives none."
    max_shelve_s: PositiveSeconds = 24 * 3600.0
    "Longest shelving time; longer requests are cut to it."
    tick_s: PositiveSeconds = 0.5
    "How often timers run (shelve expiry, stale, bad quality, delays without new data)."
    checkpoint_interval_s: PositiveSeconds = 60.0
    "How often the alarm table is saved (when it changed), so a start reads only the "
    "journal written since."
    health: HealthLimits = HealthLimits()
    "Limits of the alarm-system health metrics."
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 5000
    "Records fetched and evaluated per batch (transitions are appended per batch)."
    commit_interval_s: PositiveSeconds = 0.5
    "Input offsets are committed at most this often after the transitions are journalled, "
    "and whenever the evaluator is caught up, a timer can fire or it stops. A crash replays "
    "up to this much more input; the watermarks make the replay raise nothing twice."

    def __post_init__(self) -> None:
        for i, topic in enumerate(self.inputs):
            if record_type(topic) is not Reading:
                raise ValueError(f"inputs[{i}]: {topic!r} is not a topic of readings")
        names: dict[str, int] = {}
        for i, d in enumerate(self.definitions):
            if d.name in names:
                raise ValueError(
                    f"definitions[{i}].name: {d.name!r} is already used by definitions[{names[d.name]}]"
                )
            names[d.name] = i
        for i, d in enumerate(self.definitions):
            for j, parent in enumerate(d.suppressed_by):
                if parent not in names or parent == d.name:
                    raise ValueError(
                        f"definitions[{i}].suppressed_by[{j}]: no other definition is named {parent!r}"
                    )
            if isinstance(d, Stale) and (d.on_delay_s or d.off_delay_s):
                raise ValueError(f"definitions[{i}]: a stale alarm has no on/off delay (use for_s)")
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(d.message) if f is not None}
            except ValueError as exc:
                raise ValueError(f"definitions[{i}].message: {exc}") from None
            if fields - TEMPLATE_FIELDS:
                raise ValueError(
                    f"definitions[{i}].message: unknown field(s) {sorted(fields - TEMPLATE_FIELDS)};"
                    f" use {sorted(TEMPLATE_FIELDS)}"
                )
        if self.default_shelve_s > self.max_shelve_s:
            raise ValueError("default_shelve_s: longer than max_shelve_s")

    def build(self, ctx: BuildContext) -> Any:
        """The evaluator actor on ``ctx.log`` (the bulkhead's codec, as the other stages)."""
        from otgate.actors.alarms.actor import AlarmEvaluator
        from otgate.actors.stage_codec import stage_codec

        if ctx.log is None:
            raise ValueError("the processing stage needs a log in its bulkhead")
        return AlarmEvaluator("alarms", self, ctx.log, stage_codec(ctx), ctx.state_dir)
