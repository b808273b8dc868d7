"""The log interface both backends implement (contract: tests/test_log_contract.py).

The log is the system of record. ``append`` returns only once the records are
durable (SQLite: committed with synchronous=FULL; Kafka: acks=all), or with
``sync=False`` (records a stage can derive again from its durable input) at the
latest once a later synced append, an offset commit or ``sync()`` returned. Offsets are
per (topic, partition), start at 0 and grow by one per record. Keys pick the
partition (same key, same partition, so one asset stays ordered).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec


class TopicSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A topic as the gateway creates it at start when missing."""

    name: str
    partitions: int = 1
    retention_s: float | None = None  # None = keep (alarms, DLQs)
    retention_bytes: int | None = None
    priority: int = 0  # lower is evicted first when the disk fills; alarms/DLQs never


class LogRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One record read back from the log.

    ``gc=False``: it holds only scalars and bytes, so it can never be part of a
    reference cycle; the collector need not track the millions that pass."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ns: int


TopicPartition = tuple[str, int]


class Consumer(Protocol):
    """A consumer-group member reading from committed offsets (or the start)."""

    async def fetch(self, max_records: int = 1000, timeout: float = 1.0) -> list[LogRecord]:
        """Next records after the current position; [] when none came within timeout."""
        ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``next offset to read`` per partition for this group (durable)."""
        ...

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Move the position; the next fetch starts at ``offset``."""
        ...

    async def close(self) -> None: ...


class LogBackend(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ensure_topics(self, topics: Sequence[TopicSpec]) -> None:
        """Create missing topics (partitions, retention); leave existing ones alone."""
        ...

    async def append(self, topic: str, records: Sequence[tuple[bytes | None, bytes]], *,
                     sync: bool = True) -> None:
        """Append (key, value) records, durably unless ``sync=False`` (see the module
        doc); waits while the log pushes back."""
        ...

    async def sync(self) -> None:
        """Make every record appended so far durable (``sync=False`` ones too)."""
        ...

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer: ...
