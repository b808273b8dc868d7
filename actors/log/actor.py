"""The log's maintenance as an actor: retention and disk tiers, or the block
guard only, on a period.

Run ``LogMaintenance(..., role="retention")`` in exactly one bulkhead (the
processing stage) and ``role="guard"`` in every other process that appends to
the same embedded log, so all producers block at the block tier. On the Kafka
backend the actor idles (the broker applies retention).

State: RUNNING; DEGRADED while the disk is at the evict tier or worse (the
log is deleting data or producers are blocked). ``metrics()``: tier (0-4),
evicted records, passes, records kept for a group behind, blocked (0/1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from otgate.actors.actor import Actor
from otgate.actors.log.config import LogConfig
from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.open import open_retention
from otgate.actors.log.retention import DiskGuard, Retention, Tier
from otgate.actors.messages import State


class LogMaintenance(Actor):
    kind = "log_maintenance"

    def __init__(
        self,
        actor_id: str,
        log: Any,
        cfg: LogConfig,
        state_dir: Path,
        *,
        role: str = "retention",
        shutdown_timeout: float = 5.0,
    ) -> None:
        super().__init__(actor_id, shutdown_timeout=shutdown_timeout)
        if role not in ("retention", "guard"):
            raise ValueError(f"role: expected 'retention' or 'guard', got {role!r}")
        self.log = log
        self.cfg = cfg
        self.state_dir = state_dir
        self.role = role
        self.retention: Retention | None = None
        self.guard: DiskGuard | None = None

    async def main(self) -> None:
        if not isinstance(self.log, EmbeddedLog):
            await anyio.sleep_forever()
        if self.role == "guard":
            self.guard = DiskGuard(self.log, self.cfg)
            period = self.cfg.disk_tiers.check_interval_s
            while True:
                blocked = self.guard.check()
                self.state = State.DEGRADED if blocked else State.RUNNING
                await anyio.sleep(period)
        self.retention = await open_retention(self.cfg, self.state_dir, self.log)
        assert self.retention is not None
        period = min(self.cfg.disk_tiers.check_interval_s, self.cfg.retention_interval_s)
        while True:
            await self.retention.step()
            self.state = State.DEGRADED if self.retention.tier >= Tier.EVICT else State.RUNNING
            await anyio.sleep(period)

    async def teardown(self) -> None:
        if isinstance(self.log, EmbeddedLog):
            self.log.set_blocked(False)  # never leave producers of this process stuck

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.retention is not None:
            out["log_disk_tier"] = float(self.retention.tier)
            out["log_evicted_records"] = float(self.retention.evicted)
            out["log_retention_passes"] = float(self.retention.runs)
            out["held_back_records"] = float(self.retention.held_back)
        if isinstance(self.log, EmbeddedLog):
            out["log_producers_blocked"] = 1.0 if self.log.blocked else 0.0
        return out
