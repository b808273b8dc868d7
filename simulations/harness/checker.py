"""Compare what the devices produced with what the gateway read (its raw log)
and what reached PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from otgate.actors.log.cmd import read_rows
from otgate.actors.log.config import LogConfig

COUNTED = ("seq", "counter")
"""The parameters that carry a device's sequence number."""


@dataclass
class Stream:
    """One counting device's readings, by sequence number."""

    device: str
    kind: str  # "mqtt" (every message must arrive) or "modbus" (polled)
    produced: int = 0
    read: set[int] = field(default_factory=set)
    delivered: set[int] = field(default_factory=set)
    rows: int = 0
    max_latency_ms: float = 0.0
    max_not_read: float | None = None  # share of counts it may miss (gaps); None = unchecked

    @property
    def lost(self) -> set[int]:
        """Read into the durable log but never delivered; for MQTT also what the
        broker acknowledged (and keeps for our persistent session) but was never
        read nor delivered."""
        # A polled device counts on while the checker drains: only what it
        # counted during the run must arrive.
        lost = {v for v in self.read if v <= self.produced} - self.delivered
        if self.kind == "mqtt":
            # Delivered means read, even if the raw log no longer holds it (evicted).
            lost |= set(range(1, self.produced + 1)) - self.read - self.delivered
        return lost

    @property
    def not_read(self) -> int:
        """Polled values the gateway never saw (device away, between polls)."""
        if self.kind == "mqtt":
            return 0
        return len(set(range(1, self.produced + 1)) - self.read)

    @property
    def gaps(self) -> tuple[int, int]:
        """Polled values missed since the first one read, out of how many (what
        the device counted before the gateway's first poll is not a gap)."""
        if not self.read:
            return 0, 0
        window = set(range(min(self.read), self.produced + 1))
        return len(window - self.read), len(window)

    @property
    def duplicates(self) -> int:
        """Rows beyond one per sequence number (MQTT: each message is one reading)."""
        return self.rows - len(self.delivered) if self.kind == "mqtt" else 0


async def read_from_log(log_cfg: LogConfig, state_dir: Path, streams: dict[str, Stream]) -> None:
    for s in streams.values():
        s.read.clear()
    for row in await read_rows(log_cfg, state_dir, "telemetry.raw", 0, 10**9):
        s = streams.get(row.get("asset_id", ""))
        if s is None or row.get("parameter") not in COUNTED:
            continue  # an alarm device's other values are no sequence numbers
        if row.get("quality") != "BAD" and row.get("value") is not None:
            s.read.add(int(row["value"]))


def read_from_postgres(dsn: str, table: str, streams: dict[str, Stream]) -> None:
    """Delivered rows and their latency (commit time - device time)."""
    query = (
        "SELECT asset_id, value::bigint, count(*) OVER (PARTITION BY asset_id),"
        " extract(epoch FROM pg_xact_commit_timestamp(xmin) - device_time) * 1000"
        f" FROM {table} WHERE parameter IN {COUNTED} AND value IS NOT NULL"
    )
    for s in streams.values():
        s.delivered.clear()
        s.rows = 0
        s.max_latency_ms = 0.0
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        try:
            result = conn.execute(query).fetchall()
        except psycopg.errors.UndefinedTable:
            return  # the sink has not created its table yet: nothing delivered
        for asset, value, rows, latency in result:
            s = streams.get(asset)
            if s is None:
                continue
            s.delivered.add(int(value))
            s.rows = int(rows)
            if latency is not None:
                s.max_latency_ms = max(s.max_latency_ms, float(latency))


def settled(streams: dict[str, Stream]) -> bool:
    """Everything read is delivered, and every acknowledged MQTT message was read."""
    return all(not s.lost for s in streams.values())
