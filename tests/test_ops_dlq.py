"""The DLQ workflow at the service level, on a real embedded log: filters,
exactly once into *.clean (a second reprocess is a no-op, a crash between
the appends is resumed without a duplicate), dispositions, role boundaries
and the audit trail."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from peers.tansu import tansu_fixture  # noqa: F401

from otgate.actors.log.config import Backend, LogConfig
from otgate.actors.records import DeadLetter, DlqDisposition, Reading
from otgate.actors.validator.config import OnViolation, ParameterRule, ValidatorConfig
from otgate.supervisors.access import Caller, Forbidden, Role
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.dlq import DlqService
from otgate.supervisors.service.dlq_view import DlqFilter
from otgate.supervisors.service.errors import BadRequest, NotFound
from otgate.supervisors.service.tail import scan

T0 = 1_700_000_000_000_000_000
OPERATOR = Caller(name="olga", role=Role.OPERATOR, surface="cli", source="127.0.0.1")
ENGINEER = Caller(name="erik", role=Role.ENGINEER)
VIEWER = Caller(name="vic", role=Role.VIEWER)


def rules(high: float) -> ValidatorConfig:
    return ValidatorConfig(
        rules=[
            ParameterRule(parameter="temp", max=high, on_out_of_range=OnViolation.REJECT),
        ]
    )


class Rules:
    """The validator config "in force now"; a test changes it like a reload."""

    def __init__(self, high: float) -> None:
        self.cfg = rules(high)

    def __call__(self) -> ValidatorConfig:
        return self.cfg


def letter(i: int, value: float, asset: str = "pump-1", reason: str = "") -> DeadLetter:
    reading = Reading(
        asset_id=asset,
        parameter="temp",
        value=value,
        device_time=T0 + i * 1_000_000_000,
        gateway_time=T0 + i * 1_000_000_000 + 5,
        seq=i,
        adapter_id="plc",
    )
    return DeadLetter(
        reading=reading,
        reason=reason or "out_of_range [None, 100.0]",
        stage="validator",
        source_topic="telemetry.raw",
        source_partition=0,
        source_offset=i,
        gateway_time=T0 + i,
    )


class CrashingLog(OperatorLog):
    """A real operator log whose ``fail_on``-th append to ``topic`` (holding a
    record in ``state`` for dispositions) raises before writing: a crash
    between the steps of a reprocess."""

    def __init__(
        self, cfg: LogConfig, tmp: Path, topic: str, fail_on: int, state: DlqDisposition | None
    ) -> None:
        super().__init__(cfg, tmp)
        self.topic, self.fail_on, self.state, self.seen = topic, fail_on, state, 0

    async def append_many(self, topic: str, records: list) -> None:
        if topic == self.topic and (
            self.state is None or any(r.state is self.state for _k, r in records)
        ):
            self.seen += 1
            if self.seen == self.fail_on:
                raise OSError("power cut")
        await super().append_many(topic, records)


async def seed(oplog: OperatorLog, letters: list[DeadLetter]) -> list[str]:
    for lt in letters:
        await oplog.append("dlq.telemetry", lt.reading.asset_id, lt)
    return [f"dlq.telemetry/0/{i}" for i in range(len(letters))]


async def topic_records(oplog: OperatorLog, topic: str) -> list:
    return [obj async for _rec, obj in scan(oplog, topic)]


@pytest.mark.anyio
async def test_list_filters_show_and_single_reprocess_is_exactly_once(tmp_path) -> None:
    oplog = OperatorLog(LogConfig(), tmp_path)
    try:
        letters = [letter(0, 150.0), letter(1, 250.0), letter(2, 120.0, asset="fan-1")]
        letters.append(letter(3, 1.0, reason="duplicate"))
        ids = await seed(oplog, letters)
        await oplog.append("telemetry.raw", "pump-1", letters[0].reading)  # the original
        svc = DlqService(oplog, Rules(100.0))

        total, views = await svc.list_letters(VIEWER, DlqFilter(asset="pump-*"))
        assert total == 3 and [v.id for v in views] == [ids[0], ids[1], ids[3]]
        total, views = await svc.list_letters(VIEWER, DlqFilter(reason="out_of_range"))
        assert total == 3 and all(v.disposition is DlqDisposition.PENDING for v in views)
        total, _ = await svc.list_letters(VIEWER, DlqFilter(since_ns=T0 + 1, until_ns=T0 + 3))
        assert total == 2
        total, views = await svc.list_letters(VIEWER, DlqFilter(parameter="temp"), limit=1)
        assert total == 4 and len(views) == 1
        shown = await svc.show(VIEWER, ids[0])
        assert shown["original"] == letters[0].reading and shown["history"] == []
        with pytest.raises(NotFound):
            await svc.show(VIEWER, "dlq.telemetry/0/99")
        with pytest.raises(BadRequest):
            await svc.show(VIEWER, "telemetry.clean/0/1")

        svc.rules().rules[0] = ParameterRule(
            parameter="temp", max=200.0, on_out_of_range=OnViolation.REJECT
        )  # a rule change: 150 and 120 pass now, 250 still does not
        first = await svc.reprocess(OPERATOR, ids=[ids[0], ids[1]], note="sensor recalibrated")
        assert [o.result for o in first.outcomes] == ["reprocessed", "refused"]
        assert first.outcomes[1].reason == "out_of_range [None, 200.0]"
        again = await svc.reprocess(OPERATOR, ids=[ids[0]])
        assert [o.result for o in again.outcomes] == ["unchanged"]

        clean = await topic_records(oplog, "telemetry.clean")
        assert [r.seq for r in clean] == [0]
        # A fresh service (a restarted gateway) sees the same dispositions.
        fresh = DlqService(oplog, Rules(200.0))
        _, views = await fresh.list_letters(VIEWER, DlqFilter())
        states = {v.id: (v.disposition, v.last.reason if v.last else "") for v in views}
        assert states[ids[0]] == (DlqDisposition.REPROCESSED, "")
        assert states[ids[1]] == (DlqDisposition.PENDING, "out_of_range [None, 200.0]")
        assert states[ids[2]][0] is DlqDisposition.PENDING
        shown = await fresh.show(VIEWER, ids[0])
        assert [h.state for h in shown["history"]] == [
            DlqDisposition.REPROCESSING,
            DlqDisposition.REPROCESSED,
        ]
        assert (
            shown["history"][0].by == "olga" and shown["history"][0].note == "sensor recalibrated"
        )
        assert (await fresh.reprocess(OPERATOR, ids=[ids[0]])).counts == {"unchanged": 1}
        assert len(await topic_records(oplog, "telemetry.clean")) == 1
    finally:
        await oplog.close()


@pytest.fixture
def log_cfg(request) -> LogConfig:
    """The embedded log, or the Kafka backend on a tansu broker."""
    if request.param == "embedded":
        return LogConfig()
    tansu = request.getfixturevalue("tansu")
    return LogConfig(backend=Backend.KAFKA, bootstrap_servers=[tansu.bootstrap], idempotence=False)


AFTER = ("dlq.dispositions", DlqDisposition.REPROCESSED, "after the clean append")
BEFORE = ("telemetry.clean", None, "before the clean append")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("log_cfg", "topic", "state", "label"),
    [("embedded", *AFTER), ("embedded", *BEFORE), ("kafka", *AFTER)],  # Kafka reads idle 1 s
    indirect=["log_cfg"],
)
async def test_crash_mid_bulk_resumes_without_duplicates(
    tmp_path, log_cfg, topic, state, label
) -> None:
    oplog = CrashingLog(log_cfg, tmp_path, topic, fail_on=2, state=state)
    try:
        ids = await seed(oplog, [letter(i, 150.0 + i) for i in range(6)])
        svc = DlqService(oplog, Rules(1000.0), chunk=2)  # three chunks: the second fails
        with pytest.raises(OSError, match="power cut"):
            await svc.revalidate_all(ENGINEER)
        done = await topic_records(oplog, "telemetry.clean")
        assert [r.seq for r in done] == ([0, 1, 2, 3] if state else [0, 1]), label
    finally:
        await oplog.close()

    restarted = OperatorLog(log_cfg, tmp_path)  # the gateway after the crash
    try:
        svc = DlqService(restarted, Rules(1000.0), chunk=2)
        result = await svc.revalidate_all(ENGINEER)
        assert result.counts == {"resumed": 2, "reprocessed": 2}, label
        clean = await topic_records(restarted, "telemetry.clean")
        assert sorted(r.seq for r in clean) == [0, 1, 2, 3, 4, 5], label
        assert (await svc.revalidate_all(ENGINEER)).counts == {}
        _, views = await svc.list_letters(VIEWER, DlqFilter())
        assert {v.id: v.disposition for v in views} == dict.fromkeys(
            ids, DlqDisposition.REPROCESSED
        )
        assert len(await topic_records(restarted, "telemetry.clean")) == 6
    finally:
        await restarted.close()


@pytest.mark.anyio
async def test_discard_and_role_boundaries_are_audited_and_change_nothing(tmp_path) -> None:
    oplog = OperatorLog(LogConfig(), tmp_path)
    try:
        ids = await seed(oplog, [letter(0, 150.0), letter(1, 160.0)])
        svc = DlqService(oplog, Rules(1000.0))
        with pytest.raises(Forbidden):
            await svc.reprocess(VIEWER, ids=[ids[0]])
        with pytest.raises(Forbidden):
            await svc.discard(VIEWER, ids=[ids[0]])
        with pytest.raises(Forbidden):
            await svc.revalidate_all(OPERATOR)  # after a rule change: an engineer's call
        assert await topic_records(oplog, "dlq.dispositions") == []
        assert await topic_records(oplog, "telemetry.clean") == []

        out = await svc.discard(OPERATOR, ids=[ids[1]], note="test bench noise", request_id="r-1")
        assert out.counts == {"discarded": 1}
        again = await svc.reprocess(OPERATOR, flt=DlqFilter(asset="pump-1"))
        assert {o.id: o.result for o in again.outcomes} == {
            ids[0]: "reprocessed",
            ids[1]: "unchanged",
        }
        assert [r.seq for r in await topic_records(oplog, "telemetry.clean")] == [0]
        with pytest.raises(BadRequest):
            await svc.reprocess(OPERATOR)  # neither ids nor a filter

        audit = await topic_records(oplog, "logs.audit")
        rows = [(a.who, a.role, a.action, a.result) for a in audit]
        assert rows[:3] == [
            ("vic", "viewer", "dlq.reprocess", "refused"),
            ("vic", "viewer", "dlq.discard", "refused"),
            ("olga", "operator", "dlq.revalidate", "refused"),
        ]
        assert rows[3] == ("olga", "operator", "dlq.discard", "ok")
        assert audit[3].request_id == "r-1" and audit[3].detail == "discarded=1"
        assert audit[3].surface == "cli" and audit[3].source == "127.0.0.1"
        assert rows[4] == ("olga", "operator", "dlq.reprocess", "ok")
        assert rows[5][3].startswith("error: give either ids or a filter")
    finally:
        await oplog.close()


@pytest.mark.anyio
async def test_a_token_scoped_to_assets_lists_and_reprocesses_those_only(tmp_path) -> None:
    sam = Caller(name="sam", role=Role.OPERATOR, assets=("fan-*",))
    oplog = OperatorLog(LogConfig(), tmp_path)
    try:
        ids = await seed(oplog, [letter(0, 150.0), letter(1, 150.0, asset="fan-1")])
        svc = DlqService(oplog, Rules(1000.0))
        total, views = await svc.list_letters(sam, DlqFilter())
        assert total == 1 and views[0].id == ids[1]
        with pytest.raises(Forbidden, match="not scoped to asset 'pump-1'"):
            await svc.show(sam, ids[0])
        with pytest.raises(Forbidden, match="not scoped to asset 'pump-1'"):
            await svc.reprocess(sam, ids=ids)
        assert await topic_records(oplog, "dlq.dispositions") == []
        done = await svc.revalidate_all(Caller(name="eve", role=Role.ENGINEER, assets=("fan-*",)))
        assert {o.id: o.result for o in done.outcomes} == {ids[1]: "reprocessed"}
        assert [r.asset_id for r in await topic_records(oplog, "telemetry.clean")] == ["fan-1"]
        audit = [(a.who, a.action, a.result) for a in await topic_records(oplog, "logs.audit")]
        assert audit == [("sam", "dlq.reprocess", "refused"), ("eve", "dlq.revalidate", "ok")]
    finally:
        await oplog.close()


@pytest.mark.anyio
async def test_an_undecoded_letter_is_reprocessed_from_its_source_record(tmp_path) -> None:
    oplog = OperatorLog(LogConfig(), tmp_path)
    try:
        good = letter(0, 50.0).reading
        await oplog.append("telemetry.raw", "pump-1", good)  # offset 0: decodable now
        placeholder = Reading(asset_id="", parameter="", value=None, gateway_time=T0)
        lost = msgspec.structs.replace(
            letter(0, 0.0), reading=placeholder, reason="unknown_schema", source_offset=0
        )
        gone = msgspec.structs.replace(lost, reason="undecodable", source_offset=7)
        ids = await seed(oplog, [lost, gone])
        svc = DlqService(oplog, Rules(100.0))
        result = await svc.reprocess(OPERATOR, ids=ids)
        assert [(o.result, o.reason) for o in result.outcomes] == [
            ("reprocessed", ""),
            ("refused", "undecodable"),  # its source record is not there
        ]
        assert await topic_records(oplog, "telemetry.clean") == [good]
    finally:
        await oplog.close()


@pytest.mark.anyio
async def test_two_letters_of_one_source_record_reach_clean_once(tmp_path) -> None:
    """A validator replaying a batch after a restart can dead-letter one raw
    record twice; reprocessing both writes its reading once."""
    oplog = OperatorLog(LogConfig(), tmp_path)
    try:
        ids = await seed(oplog, [letter(4, 150.0), letter(4, 150.0), letter(5, 150.0)])
        svc = DlqService(oplog, Rules(1000.0))
        first = await svc.reprocess(OPERATOR, ids=ids[:1])
        assert first.counts == {"reprocessed": 1}
        rest = await DlqService(oplog, Rules(1000.0)).reprocess(OPERATOR, ids=ids[1:])
        assert [(o.result, o.reason) for o in rest.outcomes] == [
            ("duplicate", f"duplicate of {ids[0]}"),
            ("reprocessed", ""),
        ]
        assert [r.seq for r in await topic_records(oplog, "telemetry.clean")] == [4, 5]
        _, views = await svc.list_letters(VIEWER, DlqFilter(dispositions=(DlqDisposition.PENDING,)))
        assert views == []
    finally:
        await oplog.close()
