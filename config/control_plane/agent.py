"""The gateway's control-plane agent: pull, hand the document to the gateway's
one apply-confirm-rollback path, report the outcome.

It runs as one task in the gateway root's task group. A control plane that is
down, slow or refusing only makes pulls fail and reports wait: the running
tree is never touched by a failed pull.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Protocol

import anyio

from otgate.config.control_plane.client import ControlPlaneClient, ControlPlaneError, Pulled
from otgate.config.control_plane.config import ControlPlaneSection
from otgate.config.control_plane.contract import Outcome, Report, config_path
from otgate.config.control_plane.document import load_pulled
from otgate.config.load import ConfigError, Loaded
from otgate.supervisors.intensity import backoff_delay
from otgate.supervisors.supervisor import SupervisorStopped

log = logging.getLogger("otgate.control_plane")
JITTER = 0.1


class Applier(Protocol):
    """What the agent needs of the gateway."""

    loaded: Loaded

    async def apply_config(
        self, load: Callable[[], Loaded], *, grace: float | None = None, watch: bool = False
    ) -> Outcome: ...


class ControlPlaneAgent:
    """Pulls every ``poll_interval`` (or on ``poll_now``) and reports outcomes.

    Reports wait in a bounded queue (``report_queue``; the oldest is dropped when
    full) and are retried with backoff while the control plane is unreachable.
    A version that failed (rejected or rolled back) is not tried again in this
    run; a new one must be higher.
    """

    def __init__(self, gateway: Applier, cfg: ControlPlaneSection) -> None:
        self.gateway = gateway
        self.cfg = cfg
        self.client = ControlPlaneClient(cfg)
        self.pending: deque[Report] = deque(maxlen=cfg.report_queue)
        self.etag: str | None = None
        self.tried = 0
        self.last_pull_ok: float | None = None
        self.last_error = ""
        self.reports_sent = 0
        self.reports_dropped = 0
        self._wake = anyio.Event()
        self._reports_ready = anyio.Event()

    def statistics(self) -> dict:
        """The ``control_plane`` part of /health."""
        return {
            "url": self.cfg.url,
            "last_pull_ok": self.last_pull_ok,
            "last_error": self.last_error,
            "pending_reports": len(self.pending),
            "reports_sent": self.reports_sent,
            "reports_dropped": self.reports_dropped,
        }

    def poll_now(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        async with self.client, anyio.create_task_group() as tg:
            tg.start_soon(self._deliver_reports)
            while True:
                try:
                    await self.poll_once()
                except SupervisorStopped:  # the gateway is stopping
                    tg.cancel_scope.cancel()
                    return
                except Exception:  # a pull must never take the running gateway down
                    log.exception("control_plane_poll_failed")
                interval = self.cfg.poll_interval * (1 - JITTER * random.random())
                with anyio.move_on_after(interval):
                    await self._wake.wait()
                self._wake = anyio.Event()

    async def poll_once(self) -> None:
        """One pull; applies and reports a new version."""
        try:
            pulled = await self.client.pull(self.etag)
        except ControlPlaneError as exc:
            if exc.retriable:
                log.warning("control_plane_unreachable error=%s", exc)
            else:
                log.error("control_plane_pull_refused error=%s", exc)
            self.last_error = str(exc)
            return
        self.last_pull_ok, self.last_error = time.time(), ""
        if pulled is None:
            return
        self.etag = pulled.etag
        if pulled.version == self.gateway.loaded.config.config_version:
            return  # already running it (booted from the cache)
        log.info("control_plane_config_pulled version=%d etag=%s", pulled.version, pulled.etag)
        outcome = await self.gateway.apply_config(
            lambda: self._load(pulled), grace=self.cfg.grace, watch=True
        )
        self.tried = max(self.tried, pulled.version)
        self.report(pulled.version, outcome)

    def _load(self, pulled: Pulled) -> Loaded:
        """Called by the gateway under its reload lock: the running version is current."""
        source = f"{self.cfg.url.rstrip('/')}{config_path(self.cfg.gateway_id)}@{pulled.version}"
        floor = max(self.gateway.loaded.config.config_version, self.tried)
        if pulled.version <= floor:
            raise ConfigError(
                source,
                [
                    f"config_version: {pulled.version} is not higher than {floor} "
                    "(the running version or one already tried)"
                ],
            )
        return load_pulled(pulled.body, source, self.gateway.loaded, version=pulled.version)

    def report(self, version: int, outcome: Outcome) -> None:
        """Queue the report of one outcome (the oldest pending one is dropped when full)."""
        report = Report(
            id=uuid.uuid4().hex,
            gateway_id=self.cfg.gateway_id,
            version=version,
            status=outcome.status,
            detail=outcome.detail,
            errors=outcome.errors,
            at=time.time(),
            running_version=self.gateway.loaded.config.config_version,
        )
        log.warning(
            "control_plane_outcome version=%d status=%s running=%d detail=%s",
            version,
            outcome.status.value,
            report.running_version,
            outcome.detail,
        )
        if len(self.pending) == self.pending.maxlen:
            self.reports_dropped += 1
            log.error("control_plane_report_dropped version=%d", self.pending[0].version)
        self.pending.append(report)
        self._reports_ready.set()

    async def _deliver_reports(self) -> None:
        attempt = 0
        while True:
            await self._reports_ready.wait()
            self._reports_ready = anyio.Event()
            while self.pending:
                report = self.pending[0]
                try:
                    await self.client.report(report)
                except ControlPlaneError as exc:
                    if exc.retriable:
                        attempt += 1
                        delay = backoff_delay(attempt, 0.2, self.cfg.poll_interval, 0.5)
                        log.warning(
                            "control_plane_report_retry version=%d attempt=%d after_s=%.2f "
                            "error=%s",
                            report.version,
                            attempt,
                            delay,
                            exc,
                        )
                        await anyio.sleep(delay)
                        continue
                    log.error(
                        "control_plane_report_refused version=%d error=%s", report.version, exc
                    )
                else:
                    self.reports_sent += 1
                attempt = 0
                if self.pending and self.pending[0] is report:  # not dropped meanwhile
                    self.pending.popleft()
