"""What the console's live stream carries besides health and alarms: the root
process's recent log lines and the recent gateway events and operator actions.

Both are bounded rings with a sequence number per entry, so each stream sends
only what its page has not seen. ``RecentLogs`` is a logging handler (lines are
redacted like the stdout log). ``RecentRecords`` follows ``logs.gateway`` and
``logs.audit`` from near their end (the last ``KEEP`` records per partition):
a long audit trail is never read whole.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

import anyio

from otgate.actors.records import AuditRecord, GatewayEvent
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.tail import scan

KEEP = 100
"""Entries kept per ring (and records read back per partition at the start)."""
EVENT_TOPICS = ("logs.gateway", "logs.audit")


class Ring:
    """A bounded list of entries, each with a growing ``seq``."""

    def __init__(self, maxlen: int = KEEP) -> None:
        self.entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)
        self.seq = 0

    def add(self, entry: dict[str, Any]) -> None:
        self.seq += 1
        self.entries.append({"seq": self.seq, **entry})

    def since(self, seq: int) -> list[dict[str, Any]]:
        """The entries after ``seq`` still in the ring, oldest first."""
        # list() copies in one step: a logging thread may add meanwhile.
        return [e for e in list(self.entries) if e["seq"] > seq]


class RecentLogs(logging.Handler):
    """The root process's INFO-and-above log lines in a ring, redacted by ``redact``."""

    def __init__(self, redact: Callable[[str], str], maxlen: int = KEEP) -> None:
        super().__init__(logging.INFO)
        self.redact = redact
        self.ring = Ring(maxlen)

    def emit(self, record: logging.LogRecord) -> None:
        message = self.redact(record.getMessage())
        self.ring.add(
            {
                "t": record.created,
                "level": record.levelname,
                "event": message.split(" ", 1)[0],
                "message": message,
                "logger": record.name,
            }
        )


class RecentRecords:
    """Gateway events and audit records from the log, newest ``KEEP`` kept."""

    def __init__(self, oplog: OperatorLog) -> None:
        self.oplog = oplog
        self.ring = Ring()
        self._next: dict[tuple[str, int], int] = {}
        self._lock = anyio.Lock()

    async def poll(self) -> None:
        """Add what was appended since the last poll (one caller at a time)."""
        async with self._lock:
            backend = await self.oplog.backend()
            for topic in EVENT_TOPICS:
                for p, (low, high) in (await backend.watermarks(topic)).items():
                    start = self._next.get((topic, p), max(low, high - KEEP))
                    if start >= high:
                        continue
                    last = high - 1  # undecodable records are skipped, not read again
                    async for rec, obj in scan(self.oplog, topic, p, start):
                        self.ring.add(entry(obj))
                        last = max(last, rec.offset)
                    self._next[(topic, p)] = last + 1


def entry(obj: AuditRecord | GatewayEvent) -> dict[str, Any]:
    """One line of the console's event list."""
    if isinstance(obj, AuditRecord):
        who = f"{obj.who or '(no token)'}" + (f" ({obj.role})" if obj.role else "")
        target = f" {obj.target}" if obj.target else ""
        return {
            "t": obj.gateway_time / 1e9,
            "level": "INFO" if obj.result == "ok" else "WARNING",
            "kind": "audit",
            "message": f"{who} via {obj.surface}: {obj.action}{target} → {obj.result}",
        }
    fields = " ".join(f"{k}={v}" for k, v in obj.fields.items())
    return {
        "t": obj.gateway_time / 1e9,
        "level": obj.severity.value,
        "kind": obj.kind,
        "message": " ".join(x for x in (obj.message, fields) if x),
    }
