"""The ``[log]`` section of the gateway config: which backend, how it batches,
where schemas come from, per-topic overrides and the disk-full tiers.

No I/O here: ``open_log`` (``otgate.actors.log.open``) connects.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from otgate.config.base import NonNegativeSeconds, PositiveSeconds, StrictStruct

Percent = Annotated[float, msgspec.Meta(gt=0, le=100, description="percent, 0-100")]
PositiveInt = Annotated[int, msgspec.Meta(gt=0, description="integer, > 0")]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0, description="integer, >= 0")]


class Backend(enum.Enum):
    """Where the log lives."""

    EMBEDDED = "embedded"
    """A SQLite file in the state dir: no server needed (fresh machines, laptops)."""
    KAFKA = "kafka"
    """A Kafka-compatible broker (Redpanda on the industrial PC) via aiokafka."""


class Compression(enum.Enum):
    """Producer batch compression (Kafka backend)."""

    NONE = "none"
    GZIP = "gzip"
    SNAPPY = "snappy"
    LZ4 = "lz4"
    ZSTD = "zstd"


class TopicOverride(StrictStruct):
    """Per-topic settings that replace the defaults of ``otgate.actors.log.topics``."""

    partitions: PositiveInt | None = None
    """Partitions when the gateway creates the topic (existing topics are left alone)."""
    retention_s: NonNegativeSeconds | None = None
    """Delete records older than this many seconds (None keeps the default for the
    topic). Refused for alarms.* and dlq.*: they are never evicted."""
    retention_bytes: PositiveInt | None = None
    """Delete oldest records once a partition holds more than this many bytes."""


class DiskTiers(StrictStruct):
    """Disk-full policy (percent of the filesystem holding the log).

    Ordered tiers: ``alert`` logs a warning event; ``drop_raw`` deletes raw
    telemetry older than the newest aggregate covers; ``evict`` deletes the
    lowest-priority topics' oldest records until usage is back under the tier;
    ``block`` makes ``append`` wait (producers block, nothing is dropped
    silently) and raises a critical gateway event. Alarms and DLQs are never
    evicted, and neither tier deletes a record some consumer group has not
    committed past (then usage climbs to ``block``: producers wait, nothing
    acknowledged is lost). Every eviction is written to ``logs.gateway`` as an
    overflow event.
    """

    alert_pct: Percent = 70.0
    """At or above: a warning event, nothing deleted."""
    drop_raw_pct: Percent = 80.0
    """At or above: drop raw telemetry already covered by aggregates."""
    evict_pct: Percent = 90.0
    """At or above: evict the lowest-priority topics first (never alarms/DLQs)."""
    block_pct: Percent = 95.0
    """At or above: appends wait until usage falls below this tier."""
    check_interval_s: PositiveSeconds = 10.0
    """How often the retention task measures disk usage."""

    def __post_init__(self) -> None:
        tiers = [self.alert_pct, self.drop_raw_pct, self.evict_pct, self.block_pct]
        if tiers != sorted(tiers):
            raise ValueError(
                "log.disk_tiers: expected alert_pct <= drop_raw_pct <= evict_pct <= block_pct, "
                f"got {tiers}"
            )


class LogConfig(StrictStruct):
    """The durable log: backend, batching, schemas, topics, disk policy."""

    backend: Backend = Backend.EMBEDDED
    """``embedded`` (SQLite file, default, no broker) or ``kafka``."""

    # embedded
    path: str = "log.sqlite"
    """Embedded backend: SQLite file, relative to the gateway state dir (or absolute)."""
    busy_timeout_s: PositiveSeconds = 30.0
    """Embedded backend: how long a writer waits for another process's write lock."""

    # kafka
    bootstrap_servers: list[str] = []
    """Kafka backend: ``host:port`` of one or more brokers (required for kafka)."""
    idempotence: bool = True
    """Kafka backend: idempotent producer (no duplicates on retry). Must be off
    against brokers without InitProducerId v1+ (tansu 0.6)."""
    compression: Compression = Compression.NONE
    """Kafka backend: batch compression (``snappy``, ``lz4`` and ``zstd`` through
    cramjam, a dependency of otgate)."""
    linger_ms: NonNegativeInt = 5
    """Kafka backend: how long the producer waits to fill a batch."""
    max_batch_bytes: PositiveInt = 256 * 1024
    """Kafka backend: largest producer batch per partition (bytes)."""
    request_timeout_s: PositiveSeconds = 30.0
    """Kafka backend: how long an append waits for the broker's acks=all answer."""
    client_id: str = "otgate"
    """Kafka backend: client id the broker sees."""
    replication_factor: PositiveInt = 1
    """Kafka backend: replicas of the topics the gateway creates (1 on a
    single-node Redpanda on the industrial PC)."""

    # schemas
    registry_url: str | None = None
    """Confluent-compatible schema registry (Redpanda: ``http://127.0.0.1:8081``).
    None: schema ids come from the embedded schema table (embedded backend) or
    from the local cache file alone (kafka backend, ids local to this gateway)."""
    schema_cache: str = "schemas.json"
    """Schema cache file, relative to the state dir: lets the gateway start and
    write with the registry unreachable."""
    registry_timeout_s: PositiveSeconds = 5.0
    """Timeout of one registry request."""

    # topics and disk
    default_partitions: PositiveInt = 1
    """Partitions of topics the gateway creates, unless overridden per topic."""
    topics: dict[str, TopicOverride] = {}
    """Per-topic overrides by topic name (e.g. ``[log.topics."telemetry.raw"]``)."""
    disk_tiers: DiskTiers = DiskTiers()
    """Disk-full tiers (percent of the log's filesystem)."""
    retention_interval_s: PositiveSeconds = 60.0
    """How often time/size retention runs (embedded backend; Kafka brokers enforce
    their own retention from the topic config)."""

    def __post_init__(self) -> None:
        if self.backend is Backend.KAFKA and not self.bootstrap_servers:
            raise ValueError("log.bootstrap_servers: required when log.backend = 'kafka'")
        for name, o in self.topics.items():
            never = name.startswith(("alarms.", "dlq."))
            if never and (o.retention_s is not None or o.retention_bytes is not None):
                raise ValueError(
                    f"log.topics.{name!r}: alarms and DLQ topics are never evicted; "
                    "remove retention_s/retention_bytes"
                )
