"""One alarm's ISA-18.2 / IEC 62682 state machine (OPC UA Part 9 names in the docs).

The alarm holds independent facts, and its displayed state follows from
them (most hiding first)::

    out_of_service        -> OUT_OF_SERVICE
    shelved (until T)     -> SHELVED          (expires by itself at T)
    suppressed            -> SUPPRESSED       (by an operator, or by design:
                                               a parent alarm is active)
    active or latched     -> ACTIVE_UNACKED / ACTIVE_ACKED
    not acked             -> CLEARED_UNACKED  (returned to normal, unacknowledged)
    otherwise             -> NORMAL

So Normal → Active-Unacked (raise) → Active-Acked (ack) → Normal (clear), or
Active-Unacked → RTN-Unacked (clear) → Normal (ack). A latching alarm stays
displayed active after its condition clears (``latched``) until it is reset.
While hidden, the condition is still followed (``active``): the transitions
are journalled, nobody is notified (the router reads ``state``).

Every method that changes the alarm returns the ``Alarm`` transition record
(``seq`` + 1); an operator action that cannot apply raises ``Refused``. No
I/O, no clock: times are arguments (integer ns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from otgate.actors.alarms.config import AlarmDefinition
from otgate.actors.records import Alarm, AlarmCommand, AlarmState

EVALUATOR = "evaluator"
"""``by`` of the transitions the gateway makes itself."""
DATA_EVENTS = frozenset({"raise", "clear"})
"""Events driven by readings: their ``device_time`` is the stream's watermark."""


class Refused(Exception):
    """An operator action that does not apply to the alarm in its state (nothing changed)."""


@dataclass(frozen=True)
class Who:
    """Who moved an alarm, and why (copied onto the transition)."""

    by: str = EVALUATOR
    role: str = ""
    source: str = ""
    note: str = ""
    request_id: str = ""

    @classmethod
    def of(cls, cmd: AlarmCommand) -> Who:
        return cls(cmd.by, cmd.role, cmd.source, cmd.note, cmd.request_id)


GATEWAY = Who()


class AlarmEntry:
    """One alarm (one definition on one stream) and its lifecycle facts."""

    def __init__(self, alarm_id: str, defn: AlarmDefinition, asset_id: str, parameter: str,
                 unit: str = "") -> None:
        self.alarm_id = alarm_id
        self.defn = defn
        self.asset_id = asset_id
        self.parameter = parameter
        self.unit = unit
        self.seq = 0
        self.occurrence_id = ""
        self.active = False
        self.acked = True
        self.latched = False
        self.shelved_until: int | None = None
        self.shelved_since: int | None = None
        self.op_suppressed = False
        self.design_suppressed = False
        self.out_of_service = False
        self.raised_time: int | None = None
        self.cleared_time: int | None = None
        self.ack_time: int | None = None
        self.value: Any = None
        self.message = ""
        self.data_time: int | None = None

    @property
    def state(self) -> AlarmState:
        if self.out_of_service:
            return AlarmState.OUT_OF_SERVICE
        if self.shelved_until is not None:
            return AlarmState.SHELVED
        if self.op_suppressed or self.design_suppressed:
            return AlarmState.SUPPRESSED
        if self.active or self.latched:
            return AlarmState.ACTIVE_ACKED if self.acked else AlarmState.ACTIVE_UNACKED
        return AlarmState.NORMAL if self.acked else AlarmState.CLEARED_UNACKED

    @property
    def standing(self) -> bool:
        """Displayed active (condition active, or latched awaiting reset)."""
        return self.active or self.latched

    # -- driven by the condition ------------------------------------------------
    def activate(self, value: Any, t: int, now: int) -> Alarm | None:
        if self.active:
            return None
        before = self.state
        self.active, self.latched, self.acked = True, False, False
        self.raised_time, self.cleared_time, self.ack_time = t, None, None
        self.value, self.data_time = value, t
        self.occurrence_id = f"{self.alarm_id}#{self.seq + 1}"
        self.message = self._format(value)
        return self._record("raise", before, now, GATEWAY, device_time=t)

    def deactivate(self, value: Any, t: int, now: int) -> Alarm | None:
        if not self.active:
            return None
        before = self.state
        self.active = False
        self.latched = self.defn.latching
        self.cleared_time = t
        self.value, self.data_time = value, t
        return self._record("clear", before, now, GATEWAY, device_time=t)

    def set_design_suppressed(self, on: bool, now: int, parent: str) -> Alarm | None:
        """Suppression by design follows the parent; an alarm never journalled yet
        changes silently (its first transition shows the state)."""
        if self.design_suppressed is on:
            return None
        before = self.state
        self.design_suppressed = on
        if self.seq == 0:
            return None
        who = Who(note=f"by design: {parent} {'active' if on else 'cleared'}")
        return self._record("suppress" if on else "unsuppress", before, now, who)

    def expire_shelve(self, now: int) -> Alarm | None:
        if self.shelved_until is None or now < self.shelved_until:
            return None
        before = self.state
        self.shelved_until = self.shelved_since = None
        return self._record("shelve_expired", before, now, GATEWAY)

    # -- operator actions -------------------------------------------------------
    def ack(self, who: Who, now: int) -> Alarm:
        if self.acked:
            raise Refused("already acknowledged")
        before = self.state
        self.acked, self.ack_time = True, now
        return self._record("ack", before, now, who)

    def shelve(self, until: int, who: Who, now: int) -> Alarm:
        if self.out_of_service:
            raise Refused("out of service")
        before = self.state
        self.shelved_until = until
        if self.shelved_since is None:
            self.shelved_since = now
        return self._record("shelve", before, now, who)

    def unshelve(self, who: Who, now: int) -> Alarm:
        if self.shelved_until is None:
            raise Refused("not shelved")
        before = self.state
        self.shelved_until = self.shelved_since = None
        return self._record("unshelve", before, now, who)

    def suppress(self, on: bool, who: Who, now: int) -> Alarm:
        if self.op_suppressed is on:
            raise Refused("already suppressed" if on else "not suppressed by an operator")
        before = self.state
        self.op_suppressed = on
        return self._record("suppress" if on else "unsuppress", before, now, who)

    def reset(self, who: Who, now: int) -> Alarm:
        if not self.latched:
            raise Refused("condition still active" if self.active else "not latched")
        before = self.state
        self.latched = False
        return self._record("reset", before, now, who)

    def set_out_of_service(self, on: bool, who: Who, now: int) -> Alarm:
        if self.out_of_service is on:
            raise Refused("already out of service" if on else "in service")
        before = self.state
        self.out_of_service = on
        return self._record("out_of_service" if on else "return_to_service", before, now, who)

    # -- journal ----------------------------------------------------------------
    def refused(self, reason: str, who: Who, now: int, event: str) -> Alarm:
        """The answer to an action that did not apply: the unchanged state and ``seq``
        (not a transition: a consumer keyed on (alarm_id, seq) drops it)."""
        return self._build(f"refused:{event}", self.state, now, who, note=reason)

    def fold(self, rec: Alarm) -> None:
        """Take the facts of a journalled transition (rebuilding after a restart)."""
        if rec.seq <= self.seq or rec.event.startswith("refused"):
            return  # a replayed or answer-only record
        ev = rec.event
        self.seq, self.occurrence_id = rec.seq, rec.occurrence_id
        self.active, self.acked, self.latched = rec.active, rec.acked, rec.latched
        self.raised_time, self.cleared_time, self.ack_time = (
            rec.raised_time, rec.cleared_time, rec.ack_time
        )
        self.value, self.message = rec.value, rec.message
        if rec.shelved_until is None:
            self.shelved_since = None
        elif self.shelved_until is None:
            self.shelved_since = rec.gateway_time
        self.shelved_until = rec.shelved_until
        if ev in ("suppress", "unsuppress") and rec.by != EVALUATOR:
            self.op_suppressed = ev == "suppress"
        elif ev in ("out_of_service", "return_to_service"):
            self.out_of_service = ev == "out_of_service"
        if ev in DATA_EVENTS and rec.device_time is not None:
            self.data_time = rec.device_time

    def _format(self, value: Any) -> str:
        d = self.defn
        fields = {"asset": self.asset_id, "parameter": self.parameter, "name": d.name,
                  "value": value, "limit": d.limit_value(), "unit": self.unit}
        try:
            return d.message.format(**fields)
        except (ValueError, TypeError):  # a format spec that does not fit this value
            return "{asset} {parameter}: {name} ({value})".format(**fields)

    def _record(self, event: str, before: AlarmState, now: int, who: Who,
                device_time: int | None = None) -> Alarm:
        self.seq += 1
        return self._build(event, before, now, who, device_time=device_time)

    def _build(self, event: str, before: AlarmState, now: int, who: Who,
               device_time: int | None = None, note: str | None = None) -> Alarm:
        d = self.defn
        return Alarm(
            alarm_id=self.alarm_id, occurrence_id=self.occurrence_id, seq=self.seq,
            definition=d.name, kind=d.__struct_config__.tag or "", asset_id=self.asset_id,
            parameter=self.parameter, state=self.state, previous_state=before, event=event,
            active=self.active, acked=self.acked, latched=self.latched, severity=d.severity,
            message=self.message, area=d.area, owner=d.owner, value=self.value,
            limit=d.limit_value(), by=who.by, role=who.role, source=who.source,
            note=who.note if note is None else note, request_id=who.request_id,
            shelved_until=self.shelved_until, raised_time=self.raised_time,
            cleared_time=self.cleared_time, ack_time=self.ack_time, device_time=device_time,
            gateway_time=now,
        )
