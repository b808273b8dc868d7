"""Config of the PostgreSQL / TimescaleDB sink (``[[sinks]] type = "postgres"``)."""

from __future__ import annotations

import enum
import re
from typing import Annotated

import msgspec

from otgate.config.base import PositiveSeconds
from otgate.sinks.config import LogSinkConfig

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


class PostgresSink(LogSinkConfig, tag="postgres", tag_field="type", kw_only=True):
    """Writes readings and aggregates from the log to PostgreSQL, idempotently.

    The consumer group, batching, retry, breaker and DLQ fields are every log
    sink's (``LogSinkConfig``); this sink changes the defaults of ``topics``,
    ``batch_size`` (at most 100,000: one transaction) and ``prefetch`` (off).
    """

    dsn: str
    "libpq connection string or URI; ${secret:NAME} is substituted at load; never logged."
    topics: list[str] = msgspec.field(
        default_factory=lambda: ["telemetry.clean", "events.clean", "telemetry.1s"]
    )
    "Topics to write: readings topics (telemetry/events .clean/.raw) and aggregate topics "
    "(telemetry.1s/1min/1h)."
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
    prefetch: bool = False
    "Fetch the next batch from the log while the current one is written (one batch more "
    "in memory)."
    connect_timeout_s: PositiveSeconds = 5.0
    "TCP/handshake timeout of one connection attempt."
    statement_timeout_s: PositiveSeconds = 30.0
    "Server-side limit of one statement (a stuck batch fails and is retried)."

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.readings_table == self.aggregates_table:
            raise ValueError("readings_table and aggregates_table must differ")
        for t in self.topics:
            if topic_kind(t) is None:
                raise ValueError(f"topics: {t!r} carries neither readings nor aggregates")

    def destination(self) -> str:
        return self.redacted_dsn()

    def actor_class(self) -> type:
        from otgate.sinks.postgres.actor import PostgresSinkActor

        return PostgresSinkActor

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
