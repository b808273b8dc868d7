"""Alarm operator actions and the alarm table (issue 8 item 3).

The table is built in the root from ``alarms.clean`` (the last transition per
``alarm_id``; see ``Alarm``). An action writes one ``AlarmCommand`` to
``alarms.commands`` (the evaluator applies it) and waits, bounded, for the
transitions that carry its ``request_id`` on ``alarms.clean``.

Idempotent twice over: a ``request_id`` already written is not written again
(a retried call waits for the same command), and an alarm the action would
not change (acking an acknowledged alarm, unshelving one that is not
shelved...) is left out of the command and reported as unchanged.
"""

from __future__ import annotations

import collections
import fnmatch
import uuid
from collections.abc import Callable, Iterable

import anyio
import msgspec

from otgate.actors.records import (
    Alarm,
    AlarmAction,
    AlarmCommand,
    AlarmSeverity,
    AlarmState,
    now_ns,
)
from otgate.supervisors.access import Caller, Role, require_scope
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.audit import audit_refusals, authorize
from otgate.supervisors.service.errors import BadRequest, NotFound
from otgate.supervisors.service.tail import TopicTail

HISTORY = 50
"""Transitions kept per alarm for ``show``."""
MAX_SHELVE_S = 30 * 86400.0
MAX_WAIT_S = 60.0

ROLE_FOR: dict[AlarmAction, Role] = {
    AlarmAction.ACK: Role.OPERATOR,
    AlarmAction.SHELVE: Role.OPERATOR,
    AlarmAction.UNSHELVE: Role.OPERATOR,
    AlarmAction.SUPPRESS: Role.OPERATOR,
    AlarmAction.UNSUPPRESS: Role.OPERATOR,
    AlarmAction.RESET: Role.OPERATOR,
    AlarmAction.OUT_OF_SERVICE: Role.ENGINEER,
    AlarmAction.RETURN_TO_SERVICE: Role.ENGINEER,
}
"""The weakest role allowed to do each action."""

_S = AlarmState
_CHANGES: dict[AlarmAction, Callable[[Alarm], bool]] = {
    AlarmAction.ACK: lambda a: not a.acked,
    AlarmAction.SHELVE: lambda a: a.state not in (_S.OUT_OF_SERVICE,),
    AlarmAction.UNSHELVE: lambda a: a.state is _S.SHELVED,
    AlarmAction.SUPPRESS: lambda a: a.state not in (_S.SUPPRESSED, _S.OUT_OF_SERVICE),
    AlarmAction.UNSUPPRESS: lambda a: a.state is _S.SUPPRESSED,
    AlarmAction.RESET: lambda a: a.latched,
    AlarmAction.OUT_OF_SERVICE: lambda a: a.state is not _S.OUT_OF_SERVICE,
    AlarmAction.RETURN_TO_SERVICE: lambda a: a.state is _S.OUT_OF_SERVICE,
}
"""Whether an action would change an alarm in its current state (shelving a
shelved alarm renews its time, so it counts as a change)."""


class ActionResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an alarm action did.

    ``status``: ``applied`` (the evaluator answered for every targeted alarm and
    moved at least one, see ``transitions``), ``refused`` (it answered and moved
    none: the alarm changed between the check and the command, e.g. another
    console acked first; reasons in ``refused``), ``accepted`` (the command is on
    the log but the evaluator has not answered for all of it within the wait:
    HTTP 202), or ``unchanged`` (nothing to do).
    """

    request_id: str
    action: AlarmAction
    status: str
    targeted: list[str]
    unchanged: list[str]
    transitions: list[Alarm]
    refused: dict[str, str] = {}
    "Alarms the evaluator refused the action for, and why."


class AlarmTable:
    """Current alarms from ``alarms.clean`` plus recent history per alarm and
    the transitions of each operator request."""

    def __init__(self, oplog: OperatorLog) -> None:
        self._tail = TopicTail(oplog, "alarms.clean")
        self.current: dict[str, Alarm] = {}
        self.history: dict[str, collections.deque[Alarm]] = {}
        self.by_request: dict[str, list[Alarm]] = {}

    async def refresh(self) -> None:
        for _rec, alarm in await self._tail.poll():
            self.add(alarm)

    def add(self, alarm: Alarm) -> None:
        cur = self.current.get(alarm.alarm_id)
        if cur is None or alarm.seq == 0 or alarm.seq >= cur.seq:  # a replayed step is older
            if cur is None or not refusal(alarm):  # an answer (same seq) is no transition
                self.current[alarm.alarm_id] = alarm
        self.history.setdefault(alarm.alarm_id, collections.deque(maxlen=HISTORY)).append(alarm)
        if alarm.request_id:
            self.by_request.setdefault(alarm.request_id, []).append(alarm)

    def select(
        self,
        *,
        state: Iterable[str] = (),
        severity: Iterable[str] = (),
        asset: str = "",
        area: str = "",
    ) -> list[Alarm]:
        """Alarms matching every filter given (``asset``/``area`` are fnmatch
        patterns), most severe first, then oldest raised first."""
        states, severities = set(state), set(severity)
        out = [
            a
            for a in self.current.values()
            if (not states or a.state.value in states)
            and (not severities or a.severity.value in severities)
            and (not asset or fnmatch.fnmatchcase(a.asset_id, asset))
            and (not area or fnmatch.fnmatchcase(a.area, area))
        ]
        rank = {s: i for i, s in enumerate(AlarmSeverity)}
        out.sort(key=lambda a: (-rank[a.severity], a.raised_time or 0, a.alarm_id))
        return out

    def counts(self) -> dict[str, dict[tuple[str, str], int]]:
        """Alarms per (state, severity), and active / unacknowledged per severity."""
        by_state: collections.Counter[tuple[str, str]] = collections.Counter()
        active: collections.Counter[tuple[str, str]] = collections.Counter()
        unacked: collections.Counter[tuple[str, str]] = collections.Counter()
        for a in self.current.values():
            by_state[(a.state.value, a.severity.value)] += 1
            if a.active:
                active[("", a.severity.value)] += 1
            if not a.acked:
                unacked[("", a.severity.value)] += 1
        return {"state": dict(by_state), "active": dict(active), "unacked": dict(unacked)}


class AlarmService:
    """The alarm actions of every operator surface (see module doc)."""

    def __init__(self, oplog: OperatorLog, *, wait_s: float = 5.0, poll_s: float = 0.1) -> None:
        self.oplog = oplog
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.table = AlarmTable(oplog)
        self._commands = TopicTail(oplog, "alarms.commands")
        self._sent: dict[str, AlarmCommand] = {}
        self._lock = anyio.Lock()

    async def list_alarms(
        self,
        caller: Caller,
        *,
        state: Iterable[str] = (),
        severity: Iterable[str] = (),
        asset: str = "",
        area: str = "",
    ) -> list[Alarm]:
        await authorize(self.oplog, caller, Role.VIEWER, "alarms.list")
        state, severity = _names(state, AlarmState), _names(severity, AlarmSeverity)
        await self.table.refresh()
        found = self.table.select(state=state, severity=severity, asset=asset, area=area)
        return [a for a in found if caller.in_scope(a.asset_id)]

    async def show(self, caller: Caller, alarm_id: str) -> dict:
        """The alarm's current state and its recent transitions (oldest first)."""
        await authorize(self.oplog, caller, Role.VIEWER, "alarms.show", alarm_id)
        await self.table.refresh()
        if alarm_id not in self.table.current:
            raise NotFound(f"no alarm {alarm_id!r}")
        require_scope(caller, [self.table.current[alarm_id].asset_id])
        return {
            "alarm": self.table.current[alarm_id],
            "history": list(self.table.history[alarm_id]),
        }

    async def act(
        self,
        caller: Caller,
        action: AlarmAction,
        alarm_ids: list[str],
        *,
        note: str = "",
        duration_s: float | None = None,
        request_id: str = "",
        wait_s: float | None = None,
        occurrence_ids: dict[str, str] | None = None,
    ) -> ActionResult:
        """Ask the evaluator to apply ``action`` to ``alarm_ids`` and wait for it
        (``wait_s``, default the service's; 0 returns at once). ``occurrence_ids``
        binds the action to the activations the caller saw (``AlarmCommand``): the
        evaluator refuses it for an alarm that has been raised again since.

        Raises Forbidden (role or asset scope; audited), BadRequest (no ids, a missing or absurd
        shelve duration or wait) or NotFound (an id not in the table: nothing
        written).
        """
        wait_s = self.wait_s if wait_s is None else wait_s
        request_id = request_id or uuid.uuid4().hex
        name = f"alarms.{action.value.lower()}"
        target = ",".join(alarm_ids)[:200]
        await authorize(self.oplog, caller, ROLE_FOR[action], name, target, request_id)
        async with audit_refusals(self.oplog, caller, name, target, request_id):
            targets, detail = await self._command(
                caller, action, alarm_ids, note, duration_s, request_id, wait_s,
                occurrence_ids or {},
            )
        await self.oplog.audit(
            caller, name, target, detail=detail or note[:200], request_id=request_id
        )
        unchanged = [i for i in alarm_ids if i not in targets]
        if not targets:
            return ActionResult(
                request_id=request_id,
                action=action,
                status="unchanged",
                targeted=[],
                unchanged=unchanged,
                transitions=[],
            )
        done = await self._wait(request_id, set(targets), wait_s)
        answers = self.table.by_request.get(request_id, [])
        moved = [a for a in answers if not refusal(a)]
        status = "accepted" if not done else "applied" if moved else "refused"
        return ActionResult(
            request_id=request_id,
            action=action,
            status=status,
            targeted=targets,
            unchanged=unchanged,
            transitions=moved,
            refused={a.alarm_id: a.note for a in answers if refusal(a)},
        )

    async def _command(
        self,
        caller: Caller,
        action: AlarmAction,
        alarm_ids: list[str],
        note: str,
        duration_s: float | None,
        request_id: str,
        wait_s: float,
        occurrence_ids: dict[str, str],
    ) -> tuple[list[str], str]:
        """Write the command for the alarms it would change, once per request id;
        returns those alarms and a note for the audit."""
        if not alarm_ids:
            raise BadRequest("alarm_ids: give at least one alarm id")
        stray = sorted(set(occurrence_ids) - set(alarm_ids))
        if stray:
            raise BadRequest(f"occurrence_ids: {stray[0]!r} is not in alarm_ids")
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise BadRequest(f"wait_s: expected 0..{MAX_WAIT_S:g} s")
        if action is AlarmAction.SHELVE and not (
            duration_s is not None and 0 < duration_s <= MAX_SHELVE_S
        ):
            raise BadRequest(f"duration_s: shelving needs a duration in (0, {MAX_SHELVE_S:g}] s")
        async with self._lock:  # one request id is checked and written once
            await self.table.refresh()
            unknown = [i for i in alarm_ids if i not in self.table.current]
            if unknown:
                raise NotFound(f"no alarm {', '.join(map(repr, unknown))}")
            require_scope(caller, [self.table.current[i].asset_id for i in alarm_ids])
            for _rec, cmd in await self._commands.poll():
                self._sent[cmd.request_id] = cmd
            sent = self._sent.get(request_id)
            if sent is not None:
                return sent.alarm_ids, "repeated request: not written again"
            targets = [i for i in alarm_ids if _CHANGES[action](self.table.current[i])]
            if not targets:
                return [], "nothing to change"
            cmd = AlarmCommand(
                request_id=request_id,
                action=action,
                alarm_ids=targets,
                note=note[:500],
                duration_s=None if duration_s is None else float(duration_s),
                by=caller.name,
                role=caller.role.value,
                source=_source(caller),
                gateway_time=now_ns(),
                occurrence_ids={i: occurrence_ids[i] for i in targets if i in occurrence_ids},
            )
            await self.oplog.append("alarms.commands", request_id, cmd)
            self._sent[request_id] = cmd
            return targets, ""

    async def _wait(self, request_id: str, targets: set[str], wait_s: float) -> bool:
        """Whether every target got a transition with ``request_id`` within ``wait_s``."""
        with anyio.move_on_after(wait_s):
            while True:
                await self.table.refresh()
                moved = {a.alarm_id for a in self.table.by_request.get(request_id, [])}
                if targets <= moved:
                    return True
                await anyio.sleep(self.poll_s)
        return False


def refusal(alarm: Alarm) -> bool:
    """The evaluator's answer to an action that did not apply (``refused:<action>``, the
    alarm's unchanged state and ``seq``): not a transition."""
    return alarm.event.startswith("refused:")


def _names(values: Iterable[str], enum_: type) -> list[str]:
    """Upper-cased enum values; BadRequest naming the valid ones otherwise."""
    out = [v.upper() for v in values if v]
    valid = {m.value for m in enum_}
    bad = [v for v in out if v not in valid]
    if bad:
        raise BadRequest(f"{bad[0]!r}: expected one of {', '.join(m.value for m in enum_)}")
    return out


def _source(caller: Caller) -> str:
    return f"{caller.surface}:{caller.source}" if caller.source else caller.surface
