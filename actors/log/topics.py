"""The topic set, which record type each topic carries, and eviction priority.

Priority: lower is evicted first when the disk fills. Raw telemetry goes
first (aggregates cover it), then clean telemetry, then the fine aggregates,
then events and gateway logs; alarms, DLQs and write commands have ``NEVER``
and retention None: they are never evicted.
"""

from __future__ import annotations

from otgate.actors.log.base import TopicSpec
from otgate.actors.log.config import LogConfig
from otgate.actors.records import (
    Aggregate,
    Alarm,
    AlarmCommand,
    AuditRecord,
    Classification,
    CommandRequest,
    CommandResult,
    DeadLetter,
    DispositionRecord,
    GatewayEvent,
    Reading,
)

NEVER = 1_000_000
"""Priority of topics that are never evicted (alarms, DLQs)."""

DAY = 86400.0

# name -> (record type, default retention_s, priority)
TOPICS: dict[str, tuple[type, float | None, int]] = {
    "telemetry.raw": (Reading, 7 * DAY, 10),
    "telemetry.clean": (Reading, 7 * DAY, 20),
    "telemetry.1s": (Aggregate, 7 * DAY, 30),
    "telemetry.1min": (Aggregate, 90 * DAY, 60),
    "telemetry.1h": (Aggregate, 730 * DAY, 80),
    "events.raw": (Reading, 30 * DAY, 40),
    "events.clean": (Reading, 30 * DAY, 50),
    "logs.gateway": (GatewayEvent, 30 * DAY, 70),
    "alarms.raw": (Reading, None, NEVER),
    "alarms.clean": (Alarm, None, NEVER),
    "alarms.commands": (AlarmCommand, None, NEVER),
    "logs.audit": (AuditRecord, 365 * DAY, 90),
    "dlq.telemetry": (DeadLetter, None, NEVER),
    "dlq.events": (DeadLetter, None, NEVER),
    "dlq.dispositions": (DispositionRecord, None, NEVER),
    "commands.requests": (CommandRequest, None, NEVER),
    "commands.results": (CommandResult, None, NEVER),
}

RAW_TOPIC: dict[Classification, str] = {
    Classification.TELEMETRY: "telemetry.raw",
    Classification.EVENT: "events.raw",
    Classification.ALARM: "alarms.raw",
}
"""Where a device session's reading goes, by classification."""

# Aggregates that cover a raw topic, finest first (used by the drop_raw tier).
COVERED_BY: dict[str, tuple[str, ...]] = {
    "telemetry.raw": ("telemetry.1s", "telemetry.1min", "telemetry.1h"),
    "telemetry.clean": ("telemetry.1s", "telemetry.1min", "telemetry.1h"),
}


def record_type(topic: str) -> type | None:
    """The Struct a topic carries (None for topics otgate did not define)."""
    entry = TOPICS.get(topic)
    return entry[0] if entry else None


def never_evicted(topic: str) -> bool:
    return topic.startswith(("alarms.", "dlq.", "commands."))


def topic_specs(cfg: LogConfig) -> list[TopicSpec]:
    """Every topic with its partitions, retention and priority after overrides."""
    specs = []
    for name, (_tp, retention_s, priority) in TOPICS.items():
        o = cfg.topics.get(name)
        specs.append(
            TopicSpec(
                name=name,
                partitions=(o.partitions if o and o.partitions else cfg.default_partitions),
                retention_s=(o.retention_s if o and o.retention_s is not None else retention_s),
                retention_bytes=(o.retention_bytes if o else None),
                priority=priority,
            )
        )
    return specs
