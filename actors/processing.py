"""The ``[processing]`` config section: the validator, aggregator and alarm stages.

The stages run in the processing bulkhead, each with its own consumer group,
talking to each other only through the log (``telemetry.raw`` → validator →
``telemetry.clean`` → aggregator → ``telemetry.1s/1min/1h``; ``*.clean`` and
``alarms.raw`` → alarm evaluator → ``alarms.clean``). With ``aggregator_apart``
the aggregator runs in a bulkhead of its own (part ``aggregation``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from otgate.actors.aggregator.config import AggregatorConfig
from otgate.actors.alarms.config import AlarmsConfig
from otgate.actors.validator.config import ValidatorConfig
from otgate.config.base import StrictStruct

if TYPE_CHECKING:
    from otgate.actors.context import BuildContext


class ProcessingConfig(StrictStruct):
    """Validation, aggregation and alarms of the raw stream (``[processing]``)."""

    validator: ValidatorConfig = msgspec.field(default_factory=ValidatorConfig)
    "Rules per parameter, time rules, DLQ (``[processing.validator]``)."
    aggregator: AggregatorConfig = msgspec.field(default_factory=AggregatorConfig)
    "1 s / 1 min / 1 h windows (``[processing.aggregator]``)."
    alarms: AlarmsConfig = msgspec.field(default_factory=AlarmsConfig)
    "Alarm definitions and the ISA-18.2 lifecycle (``[processing.alarms]``)."
    aggregator_apart: bool = False
    "Run the aggregator in a bulkhead process of its own (part id 'aggregation'), apart from "
    "the validator and the alarm evaluator: its window work, the costliest stage, then no "
    "longer shares their event loop and GIL (beside them it yields every 3 ms). Costs one "
    "process and ~35 % more processing CPU per point (the aggregator decodes what the "
    "validator passed on unchanged: the decode memo is shared only within a process)."

    def apart(self) -> bool:
        """Whether the aggregator runs in its own bulkhead (``aggregator_apart``, enabled)."""
        return self.aggregator_apart and self.aggregator.enabled

    def split(self) -> tuple[ProcessingConfig, ProcessingConfig | None]:
        """(the stages of the processing part, the aggregator's part when ``apart``)."""
        if not self.apart():
            return self, None
        off = {"enabled": False}
        return (
            msgspec.structs.replace(
                self, aggregator=msgspec.structs.replace(self.aggregator, **off)),
            msgspec.structs.replace(
                self, validator=msgspec.structs.replace(self.validator, **off),
                alarms=msgspec.structs.replace(self.alarms, **off)),
        )

    def build(self, ctx: BuildContext) -> list[Any]:
        """The enabled stage actors, validator first (start them in this order)."""
        out = []
        if self.validator.enabled:
            out.append(self.validator.build(ctx))
        if self.aggregator.enabled:
            out.append(self.aggregator.build(ctx))
        if self.alarms.enabled:
            out.append(self.alarms.build(ctx))
        return out
