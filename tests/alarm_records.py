"""Alarm transitions for the alert router tests, as H2's evaluator writes them to
``alarms.clean``: one ``Alarm`` per transition, ``seq`` counting per alarm; and
``send_command``, an operator's alarm command as the status endpoint writes it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import msgspec

from otgate.actors.log.config import LogConfig
from otgate.actors.records import (
    Alarm,
    AlarmAction,
    AlarmCommand,
    AlarmSeverity,
    AlarmState,
    now_ns,
)
from otgate.supervisors.oplog import OperatorLog

S = 1_000_000_000


@dataclass
class AlarmDriver:
    """Drives one alarm through its lifecycle, producing consistent records."""

    alarm_id: str
    asset_id: str = "pump-1"
    severity: AlarmSeverity = AlarmSeverity.CRITICAL
    area: str = "north"
    t: float = 1_700_000_000.0
    seq: int = 0
    occurrence: int = 0
    state: AlarmState = AlarmState.NORMAL
    _occ: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _next(self, event: str, state: AlarmState, *, active: bool, acked: bool,
               at: float | None = None, by: str = "evaluator") -> Alarm:
        if at is not None:
            self.t = at
        self.seq += 1
        prev, self.state = self.state, state
        return Alarm(
            alarm_id=self.alarm_id, occurrence_id=f"{self.alarm_id}-{self.occurrence}",
            seq=self.seq, definition="high_pressure", kind="high", asset_id=self.asset_id,
            parameter="pressure", state=state, previous_state=prev, event=event,
            active=active, acked=acked, severity=self.severity,
            message=f"{self.asset_id} pressure high", area=self.area, owner="ops",
            value=9.5, limit=8.0, by=by, gateway_time=int(self.t * S),
            raised_time=int(self.t * S) if event == "raise" else None,
        )

    def raise_(self, at: float | None = None) -> Alarm:
        self.occurrence = next(self._occ)
        return self._next("raise", AlarmState.ACTIVE_UNACKED, active=True, acked=False, at=at)

    def ack(self, at: float | None = None) -> Alarm:
        active = self.state is AlarmState.ACTIVE_UNACKED
        return self._next("ack", AlarmState.ACTIVE_ACKED if active else AlarmState.NORMAL,
                          active=active, acked=True, at=at, by="alice")

    def clear(self, at: float | None = None) -> Alarm:
        acked = self.state is AlarmState.ACTIVE_ACKED
        return self._next("clear", AlarmState.NORMAL if acked else AlarmState.CLEARED_UNACKED,
                          active=False, acked=acked, at=at)

    def shelve(self, at: float | None = None) -> Alarm:
        return self._next("shelve", AlarmState.SHELVED, active=True, acked=False, at=at,
                          by="alice")

    def unshelve(self, at: float | None = None) -> Alarm:
        return self._next("unshelve", AlarmState.ACTIVE_UNACKED, active=True, acked=False,
                          at=at, by="alice")

    def suppress(self, at: float | None = None) -> Alarm:
        return self._next("suppress", AlarmState.SUPPRESSED, active=True, acked=False, at=at,
                          by="alice")


def router_config(**kw) -> msgspec.Struct:
    from otgate.sinks.alert_router import AlertRouter

    return msgspec.convert({"type": "alert_router", **kw}, AlertRouter)


def send_command(state: Path, action: AlarmAction, alarm_id: str, request_id: str,
                 cfg: LogConfig | None = None, key: str = "press-1") -> None:
    """Append an alarm command to ``alarms.commands`` of the log in ``state``
    (``cfg``: the gateway's log config; the embedded log by default)."""

    async def go() -> None:
        ol = OperatorLog(cfg or LogConfig(), state)
        try:
            await ol.append("alarms.commands", key, AlarmCommand(
                request_id=request_id, action=action, alarm_ids=[alarm_id], by="ana",
                role="operator", source="test", gateway_time=now_ns()))
        finally:
            await ol.close()

    anyio.run(go)
