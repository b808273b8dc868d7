"""Alarm operator actions at the service level, on a real embedded log.

The alarm evaluator (which applies ``alarms.commands``) is not part of this
test: the test writes the ``alarms.clean`` transitions itself, as the
evaluator would, and checks what the service owns: the table, the command
written, idempotence, authorization, audit and the bounded wait.
"""

from __future__ import annotations

import anyio
import pytest

from otgate.actors.log.config import LogConfig
from otgate.actors.records import Alarm, AlarmAction, AlarmSeverity, AlarmState
from otgate.config.schema import Token
from otgate.supervisors.access import Caller, Forbidden, Role, identify
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.alarms import AlarmService
from otgate.supervisors.service.errors import BadRequest, NotFound
from otgate.supervisors.service.tail import scan

T0 = 1_700_000_000_000_000_000
OPERATOR = Caller(name="olga", role=Role.OPERATOR, surface="cli", source="127.0.0.1")
ENGINEER = Caller(name="erik", role=Role.ENGINEER)
VIEWER = Caller(name="vic", role=Role.VIEWER)


def alarm(alarm_id: str, seq: int, state: AlarmState, **kw: object) -> Alarm:
    asset = alarm_id.split(":")[0]
    return Alarm(
        alarm_id=alarm_id,
        occurrence_id=f"{alarm_id}#1",
        seq=seq,
        asset_id=asset,
        parameter="temp",
        state=state,
        active=state in (AlarmState.ACTIVE_UNACKED, AlarmState.ACTIVE_ACKED),
        acked=state not in (AlarmState.ACTIVE_UNACKED, AlarmState.CLEARED_UNACKED),
        gateway_time=T0 + seq,
        raised_time=T0,
        **kw,
    )


async def journal(oplog: OperatorLog, *alarms: Alarm) -> None:
    """Write transitions to ``alarms.clean`` as the evaluator would."""
    for a in alarms:
        await oplog.append("alarms.clean", a.alarm_id, a)


async def records(oplog: OperatorLog, topic: str) -> list:
    return [obj async for _rec, obj in scan(oplog, topic)]


async def evaluate_once(oplog: OperatorLog, seen: set[str]) -> None:
    """What the evaluator would do with each new ACK command: one transition
    per alarm carrying the command's request id and who sent it."""
    for cmd in await records(oplog, "alarms.commands"):
        if cmd.request_id in seen or cmd.action is not AlarmAction.ACK:
            continue
        seen.add(cmd.request_id)
        for aid in cmd.alarm_ids:
            await oplog.append(
                "alarms.clean",
                aid,
                alarm(
                    aid,
                    2,
                    AlarmState.ACTIVE_ACKED,
                    event="ack",
                    by=cmd.by,
                    role=cmd.role,
                    request_id=cmd.request_id,
                    note=cmd.note,
                    severity=AlarmSeverity.HIGH,
                ),
            )


@pytest.mark.anyio
async def test_table_filters_actions_idempotence_and_wait(tmp_path) -> None:
    oplog = OperatorLog(LogConfig(), tmp_path)
    try:
        await journal(
            oplog,
            alarm("pump-1:temp_high", 1, AlarmState.ACTIVE_UNACKED, severity=AlarmSeverity.HIGH),
            alarm("pump-2:temp_high", 1, AlarmState.ACTIVE_UNACKED, area="hall-b"),
            alarm("fan-1:vib", 1, AlarmState.ACTIVE_UNACKED, latched=True),
            alarm("fan-1:vib", 2, AlarmState.ACTIVE_ACKED, latched=True),
        )
        svc = AlarmService(oplog, wait_s=0.3, poll_s=0.02)

        listed = await svc.list_alarms(VIEWER)
        assert listed[0].alarm_id == "pump-1:temp_high"  # HIGH first
        assert {a.alarm_id: a.seq for a in listed}["fan-1:vib"] == 2
        assert [a.alarm_id for a in await svc.list_alarms(VIEWER, state=["active_unacked"])] == [
            "pump-1:temp_high",
            "pump-2:temp_high",
        ]
        assert [a.alarm_id for a in await svc.list_alarms(VIEWER, asset="fan-*")] == ["fan-1:vib"]
        assert len(await svc.list_alarms(VIEWER, area="hall-b")) == 1
        assert len(await svc.list_alarms(VIEWER, severity=["HIGH"])) == 1
        with pytest.raises(BadRequest, match="expected one of"):
            await svc.list_alarms(VIEWER, state=["ON_FIRE"])
        counts = svc.table.counts()
        assert counts["unacked"] == {("", "HIGH"): 1, ("", "MEDIUM"): 1}
        assert counts["active"] == {("", "HIGH"): 1, ("", "MEDIUM"): 2}

        # No evaluator yet: the command is on the log, the call says "accepted".
        res = await svc.act(
            OPERATOR,
            AlarmAction.ACK,
            ["pump-1:temp_high", "fan-1:vib"],
            note="seen",
            request_id="r1",
        )
        assert res.status == "accepted" and res.targeted == ["pump-1:temp_high"]
        assert res.unchanged == ["fan-1:vib"]  # already acknowledged
        # The same request again: still one command; now the evaluator applies it.
        seen: set[str] = set()
        async with anyio.create_task_group() as tg:
            tg.start_soon(evaluate_once, oplog, seen)
            again = await svc.act(OPERATOR, AlarmAction.ACK, ["pump-1:temp_high"], request_id="r1")
        assert again.status == "applied"
        assert [(t.alarm_id, t.by, t.note) for t in again.transitions] == [
            ("pump-1:temp_high", "olga", "seen")
        ]
        cmds = await records(oplog, "alarms.commands")
        assert [(c.request_id, c.action, c.alarm_ids, c.by, c.source) for c in cmds] == [
            ("r1", AlarmAction.ACK, ["pump-1:temp_high"], "olga", "cli:127.0.0.1")
        ]
        # Acked now: a new ack changes nothing and writes no command.
        noop = await svc.act(OPERATOR, AlarmAction.ACK, ["pump-1:temp_high"])
        assert noop.status == "unchanged" and len(await records(oplog, "alarms.commands")) == 1
        shown = await svc.show(VIEWER, "pump-1:temp_high")
        assert [h.seq for h in shown["history"]] == [1, 2]

        shelve = await svc.act(OPERATOR, AlarmAction.SHELVE, ["pump-2:temp_high"], duration_s=600)
        assert shelve.status == "accepted"
        assert (await records(oplog, "alarms.commands"))[-1].duration_s == 600
        with pytest.raises(BadRequest, match="duration_s"):
            await svc.act(OPERATOR, AlarmAction.SHELVE, ["pump-2:temp_high"])
        reset = await svc.act(OPERATOR, AlarmAction.RESET, ["fan-1:vib"])
        assert reset.targeted == ["fan-1:vib"]
        assert (
            await svc.act(OPERATOR, AlarmAction.RESET, ["pump-2:temp_high"])
        ).status == "unchanged"
    finally:
        await oplog.close()


@pytest.mark.anyio
async def test_refused_and_unknown_calls_change_nothing_and_are_audited(tmp_path) -> None:
    oplog = OperatorLog(LogConfig(), tmp_path)
    try:
        await journal(oplog, alarm("pump-1:temp_high", 1, AlarmState.ACTIVE_UNACKED))
        svc = AlarmService(oplog, wait_s=0.1, poll_s=0.02)
        with pytest.raises(Forbidden):
            await svc.act(VIEWER, AlarmAction.ACK, ["pump-1:temp_high"])
        with pytest.raises(Forbidden):
            await svc.act(OPERATOR, AlarmAction.OUT_OF_SERVICE, ["pump-1:temp_high"])
        with pytest.raises(NotFound):
            await svc.act(OPERATOR, AlarmAction.ACK, ["pump-1:temp_high", "nope"])
        assert await records(oplog, "alarms.commands") == []
        oos = await svc.act(ENGINEER, AlarmAction.OUT_OF_SERVICE, ["pump-1:temp_high"])
        assert oos.status == "accepted"
        audit = [(r.who, r.action, r.result[:6]) for r in await records(oplog, "logs.audit")]
        assert audit == [
            ("vic", "alarms.ack", "refuse"),
            ("olga", "alarms.out_of_service", "refuse"),
            ("olga", "alarms.ack", "error:"),
            ("erik", "alarms.out_of_service", "ok"),
        ]
    finally:
        await oplog.close()


@pytest.mark.anyio
async def test_a_token_scoped_to_assets_sees_and_acts_on_those_only(tmp_path) -> None:
    tokens = [Token(token="line-2-tok", role="operator", name="sam", assets=["fan-*"])]
    sam = identify(tokens, "line-2-tok", surface="cli")
    assert sam.assets == ("fan-*",) and sam.in_scope("fan-3") and not sam.in_scope("pump-1")
    oplog = OperatorLog(LogConfig(), tmp_path)
    try:
        await journal(
            oplog,
            alarm("pump-1:temp_high", 1, AlarmState.ACTIVE_UNACKED),
            alarm("fan-1:vib", 1, AlarmState.ACTIVE_UNACKED),
        )
        svc = AlarmService(oplog, wait_s=0.05, poll_s=0.02)
        assert [a.alarm_id for a in await svc.list_alarms(sam)] == ["fan-1:vib"]
        with pytest.raises(Forbidden, match="not scoped to asset 'pump-1'"):
            await svc.show(sam, "pump-1:temp_high")
        with pytest.raises(Forbidden, match="not scoped to asset 'pump-1'"):
            await svc.act(sam, AlarmAction.ACK, ["fan-1:vib", "pump-1:temp_high"])
        assert await records(oplog, "alarms.commands") == []
        assert (await svc.act(sam, AlarmAction.ACK, ["fan-1:vib"])).targeted == ["fan-1:vib"]
        audit = [(r.who, r.result, r.detail) for r in await records(oplog, "logs.audit")]
        assert audit[0] == ("sam", "refused", "token 'sam' is not scoped to asset 'pump-1'")
        assert audit[1][:2] == ("sam", "ok")
    finally:
        await oplog.close()


@pytest.mark.anyio
async def test_an_action_bound_to_activations_carries_them_on_the_command(tmp_path) -> None:
    oplog = OperatorLog(LogConfig(), tmp_path)
    try:
        await journal(
            oplog,
            alarm("pump-1:temp_high", 1, AlarmState.ACTIVE_UNACKED),
            alarm("fan-1:vib", 1, AlarmState.ACTIVE_ACKED),
        )
        svc = AlarmService(oplog, wait_s=0.05, poll_s=0.02)
        with pytest.raises(BadRequest, match="occurrence_ids: 'nope' is not in alarm_ids"):
            await svc.act(OPERATOR, AlarmAction.ACK, ["pump-1:temp_high"],
                          occurrence_ids={"nope": "nope#1"})
        assert await records(oplog, "alarms.commands") == []
        bound = {"pump-1:temp_high": "pump-1:temp_high#1", "fan-1:vib": "fan-1:vib#1"}
        res = await svc.act(OPERATOR, AlarmAction.ACK, ["pump-1:temp_high", "fan-1:vib"],
                            occurrence_ids=bound, request_id="r9")
        assert res.targeted == ["pump-1:temp_high"]  # fan-1 is acknowledged already
        [cmd] = await records(oplog, "alarms.commands")
        assert cmd.occurrence_ids == {"pump-1:temp_high": "pump-1:temp_high#1"}
    finally:
        await oplog.close()
