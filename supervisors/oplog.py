"""The root process's own handle on the log, for operator records.

Operator actions are records: an alarm command goes to ``alarms.commands``
(the evaluator applies it), every mutating call leaves an ``AuditRecord`` on
``logs.audit``. The root opens the log lazily on the first such call (no I/O
at start, so a gateway whose log is slow to open still serves /health) and
closes it at stop. Appends are durable when they return, like every append.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from otgate.actors.log.config import LogConfig
from otgate.actors.log.open import open_log, schema_store
from otgate.actors.log.publisher import Codec, Decoder
from otgate.actors.records import AuditRecord, now_ns
from otgate.supervisors.access import Caller

log = logging.getLogger("otgate.oplog")


class OperatorLog:
    """Appends operator records from the root (see module doc)."""

    def __init__(self, cfg: LogConfig, state_dir: Path) -> None:
        self.cfg = cfg
        self.state_dir = Path(state_dir)
        self.log: Any = None
        self.codec: Codec | None = None
        self.decoder: Decoder | None = None
        self._prepared: set[str] = set()
        self._lock = anyio.Lock()
        self._closers: list[Callable[[], Awaitable[None]]] = []

    async def _ready(self, topic: str) -> Codec:
        async with self._lock:
            if self.log is None:
                self.log = await open_log(self.cfg, self.state_dir)
                store = schema_store(self.cfg, self.state_dir, self.log)
                self.codec = Codec(store)
                self.decoder = Decoder(store)
            assert self.codec is not None
            if topic not in self._prepared:
                await self.codec.prepare(topic)
                self._prepared.add(topic)
            return self.codec

    async def backend(self) -> Any:
        """The started log backend (opened on first use), e.g. to read a topic."""
        await self._ready("logs.audit")
        return self.log

    async def append(self, topic: str, key: str, record: Any) -> None:
        """Durably append one record of ``topic``'s type, keyed by ``key``."""
        await self.append_many(topic, [(key, record)])

    async def append_many(self, topic: str, records: Sequence[tuple[str, Any]]) -> None:
        """Durably append ``(key, record)`` pairs of ``topic``'s type in one call."""
        if not records:
            return
        codec = await self._ready(topic)
        await self.log.append(topic, [(k.encode(), codec.encode(topic, r)) for k, r in records])

    async def audit(
        self,
        caller: Caller,
        action: str,
        target: str = "",
        *,
        result: str = "ok",
        detail: str = "",
        request_id: str = "",
    ) -> None:
        """Write who did what to ``logs.audit`` (and the structured log)."""
        rec = AuditRecord(
            who=caller.name,
            role=caller.role.value,
            source=caller.source,
            surface=caller.surface,
            action=action,
            target=target,
            result=result,
            detail=detail[:500],
            request_id=request_id,
            gateway_time=now_ns(),
        )
        log.warning(
            "operator_action who=%s role=%s surface=%s action=%s target=%s result=%s",
            rec.who, rec.role, rec.surface, action, target, result,
        )
        await self.append("logs.audit", caller.name, rec)

    def on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        """Have ``close()`` call ``close`` first (e.g. a reader's own consumer)."""
        self._closers.append(close)

    async def close(self) -> None:
        for close in self._closers:
            await close()
        if self.log is not None:
            await self.log.close()
            self.log = None
