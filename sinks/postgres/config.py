"""Config of the PostgreSQL / TimescaleDB sink (``[[sinks]] type = "postgres"``)."""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from otgate.config.base import Identifier, PositiveSeconds, StrictStruct

if TYPE_CHECKING:
    from otgate.actors.context import BuildContext

SqlName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="SQL identifier: lower-case letters, digits, '_' (max 63)",
    ),
]


class OnConflict(enum.Enum):
    """What a row whose key (asset_id, parameter, device_time) is already stored does."""

    NOTHING = "nothing"  # first write wins; a replay changes nothing (the default)
    UPDATE = "update"  # last write wins; a replay rewrites the same values


class PostgresSink(StrictStruct, tag="postgres", tag_field="type"):
    """Writes readings and aggregates from the log to PostgreSQL, idempotently."""

    id: Identifier
    "Sink id: names the actor, its circuit breaker and (by default) its consumer group."
    dsn: str
    "libpq connection string or URI; ${secret:NAME} is substituted at load; never logged."
    topics: list[str] = msgspec.field(
        default_factory=lambda: ["telemetry.clean", "events.clean", "telemetry.1s"]
    )
    "Topics to write: readings topics (telemetry/events .clean/.raw) and aggregate topics "
    "(telemetry.1s/1min/1h)."
    group: Identifier | None = None
    "Consumer group; default 'sink.<id>'."
    db_schema: SqlName = "public"
    "Schema of the tables (created if missing)."
    readings_table: SqlName = "otgate_readings"
    "Table of readings, primary key (asset_id, parameter, device_time)."
    aggregates_table: SqlName = "otgate_aggregates"
    "Table of aggregates, primary key (asset_id, parameter, resolution, window_start)."
    on_conflict: OnConflict = OnConflict.NOTHING
    "Behaviour on a key already stored (replays after a crash hit this)."
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 5000
    "Records per database transaction at most."
    fetch_timeout_s: PositiveSeconds = 0.2
    "How long an idle sink waits for records before looking again."
    connect_timeout_s: PositiveSeconds = 5.0
    "TCP/handshake timeout of one connection attempt."
    statement_timeout_s: PositiveSeconds = 30.0
    "Server-side limit of one statement (a stuck batch fails and is retried)."
    breaker_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    "Consecutive failed batches that open the circuit breaker."
    breaker_cooldown_s: PositiveSeconds = 5.0
    "How long an open breaker waits before one trial batch."
    retry_initial_s: PositiveSeconds = 0.2
    "Delay after a failed batch while the breaker is still closed; doubles per failure."
    retry_max_s: PositiveSeconds = 5.0
    "Upper bound of that delay."
    dlq_topic: str = "dlq.telemetry"
    "Where rows the database refuses as data errors go (reason and source offset)."

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError("topics: at least one topic")
        if self.readings_table == self.aggregates_table:
            raise ValueError("readings_table and aggregates_table must differ")
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError("retry_initial_s must be <= retry_max_s")
        for t in self.topics:
            if topic_kind(t) is None:
                raise ValueError(f"topics: {t!r} carries neither readings nor aggregates")

    @property
    def consumer_group(self) -> str:
        return self.group or f"sink.{self.id}"

    def build(self, ctx: BuildContext) -> Any:
        """The sink actor; needs ``ctx.log`` and a codec in ``ctx.extras['codec']``
        (a ``LogCodec``; built from ``ctx.extras['schemas']`` when absent)."""
        from otgate.sinks.postgres.actor import PostgresSinkActor

        if ctx.log is None:
            raise ValueError(f"sink {self.id}: no log in this bulkhead")
        from otgate.actors.stage_codec import stage_codec

        return PostgresSinkActor(f"sink.{self.id}", self, ctx.log, stage_codec(ctx))

    def redacted_dsn(self) -> str:
        return redact_dsn(self.dsn)


def topic_kind(topic: str) -> str | None:
    """'aggregates', 'readings', or None for topics this sink cannot write."""
    from otgate.actors.log.topics import record_type
    from otgate.actors.records import Aggregate, Reading

    tp = record_type(topic)
    if tp is Aggregate:
        return "aggregates"
    if tp is Reading:
        return "readings"
    return None


_PW_URI = re.compile(r"(://[^:/@]*:)([^@]*)(@)")
_PW_KV = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by '***' (for logs and /health)."""
    return _PW_KV.sub(r"\1***", _PW_URI.sub(r"\1***\3", dsn))
