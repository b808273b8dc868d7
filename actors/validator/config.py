"""Config of the validator: per-parameter rules and the time rules."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from otgate.config.base import Identifier, PositiveSeconds, StrictStruct

Pattern = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=256, description="fnmatch pattern, e.g. 'pump-*'"),
]


class OnViolation(enum.Enum):
    """What a rule violation does to the reading. Nothing is ever dropped silently."""

    SUSPECT = "suspect"  # keep it in *.clean, quality at least SUSPECT
    BAD = "bad"  # keep it in *.clean, quality BAD (stats exclude BAD values)
    REJECT = "reject"  # send it to dlq.* with the reason; it is not in *.clean


class OnDuplicate(enum.Enum):
    """What happens to a second reading with the same asset, parameter and device_time."""

    DLQ = "dlq"  # dlq.* with reason "duplicate" (kept, visible, never in *.clean)
    DROP = "drop"  # counted and dropped; it is still in the raw topic
    KEEP = "keep"  # passed on; the sinks' upsert makes it harmless


class ParameterRule(StrictStruct):
    """Rules for the parameters whose names match ``parameter`` (first match wins)."""

    parameter: Pattern
    "Parameter name or fnmatch pattern ('temp*', '*')."
    asset: Pattern = "*"
    "Asset id or fnmatch pattern this rule applies to."
    min: float | None = None
    "Lowest plausible value (inclusive); below it the range rule is violated."
    max: float | None = None
    "Highest plausible value (inclusive); above it the range rule is violated."
    on_out_of_range: OnViolation = OnViolation.BAD
    "What a value outside [min, max] does."
    max_rate_per_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    "Largest plausible |change| per second of device time between two readings."
    on_rate_exceeded: OnViolation = OnViolation.SUSPECT
    "What a change faster than max_rate_per_s does."
    expected_interval_s: PositiveSeconds | None = None
    "How often a reading is expected; a longer silence raises a gap event."
    gap_factor: Annotated[float, msgspec.Meta(ge=1.0)] = 2.5
    "A gap is a device-time step larger than gap_factor * expected_interval_s."

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"rule for {self.parameter!r}: min ({self.min}) > max ({self.max})")


if TYPE_CHECKING:
    from otgate.actors.context import BuildContext


class ValidatorConfig(StrictStruct):
    """The validator stage: ``*.raw`` → ``*.clean`` | ``dlq.*`` (``[processing.validator]``)."""

    enabled: bool = True
    "Run the validator stage."
    group: Identifier = "validator"
    "Consumer group on the raw topics."
    inputs: list[str] = msgspec.field(default_factory=lambda: ["telemetry.raw", "events.raw"])
    "Raw topics to read; '<x>.raw' is written to '<x>.clean' or 'dlq.<x>'."
    rules: list[ParameterRule] = msgspec.field(default_factory=list)
    "Per-parameter rules, first match wins; a parameter no rule matches only gets the time rules."
    max_clock_skew_s: PositiveSeconds = 10.0
    "|gateway_time - device_time| above this raises a clock-skew event."
    skew_event_interval_s: PositiveSeconds = 60.0
    "While an asset stays skewed, repeat its clock-skew event at most this often."
    on_duplicate: OnDuplicate = OnDuplicate.DLQ
    "What a repeated (asset, parameter, device_time) does."
    duplicate_memory: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 64
    "Recent device times remembered per (asset, parameter) for duplicate detection."
    events_topic: str = "events.clean"
    "Where gap and clock-skew events are written."
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 5000
    "Records fetched and validated per batch (outputs are appended per batch, without an fsync "
    "of their own: the input commit's fsync covers them). At 2,000, when each batch waited for "
    "two fsyncs (append, commit), the stage idled on them at 45k readings/s here."
    commit_interval_s: PositiveSeconds = 0.5
    "Input offsets are committed at most this often, and whenever the stage is caught up or "
    "stops (not after every batch: one write transaction less on the path). A crash replays "
    "up to this much more input; clean readings may repeat (the sinks upsert)."

    def __post_init__(self) -> None:
        for topic in self.inputs:
            if not topic.endswith(".raw"):
                raise ValueError(f"inputs: {topic!r} must end with '.raw'")

    def build(self, ctx: BuildContext) -> Any:
        """The stage actor on ``ctx.log`` (codec: ``ctx.extras['codec']`` or one built
        from ``ctx.extras['schemas']``)."""
        from otgate.actors.stage_codec import stage_codec
        from otgate.actors.validator.actor import ValidatorActor

        if ctx.log is None:
            raise ValueError("the processing stage needs a log in its bulkhead")
        return ValidatorActor("validator", self, ctx.log, stage_codec(ctx))
