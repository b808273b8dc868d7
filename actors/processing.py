"""The ``[processing]`` config section: the validator, aggregator and alarm stages.

The stages run in the processing bulkhead, each with its own consumer group,
talking to each other only through the log (``telemetry.raw`` → validator →
``telemetry.clean`` → aggregator → ``telemetry.1s/1min/1h``; ``*.clean`` and
``alarms.raw`` → alarm evaluator → ``alarms.clean``).
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
