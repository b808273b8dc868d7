"""The alarm evaluator actor on the embedded log with the real Avro codec."""

from __future__ import annotations

import anyio
import msgspec
import pytest
from stage_log import open_log, read_all, wait_until

from otgate.actors.alarms.actor import AlarmEvaluator
from otgate.actors.alarms.config import AlarmsConfig
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.records import (
    AlarmAction,
    AlarmCommand,
    AlarmState,
    Classification,
    Quality,
    Reading,
)
from otgate.actors.stage_codec import LogCodec

S = 1_000_000_000
T0 = 1_700_000_000 * S
CFG = {
    "tick_s": 0.05,
    "definitions": [
        {"kind": "high", "name": "hot", "parameter": "temp", "limit": 100.0, "deadband": 2.0,
         "severity": "HIGH", "area": "ovens", "owner": "shift-a"},
    ],
}


def rd(t: float, value, parameter="temp", cls=Classification.TELEMETRY, quality=Quality.GOOD):
    return Reading(asset_id="oven-1", parameter=parameter, value=value, classification=cls,
                   quality=quality, device_time=T0 + round(t * S), gateway_time=T0 + round(t * S))


async def put(lg, codec, topic: str, records: list) -> None:
    await codec.prepare([topic])
    await lg.append(topic, [(b"oven-1", codec.encode(topic, r)) for r in records])


async def run_until(actor: AlarmEvaluator, cond) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        await wait_until(cond)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_readings_and_commands_become_the_journal_and_a_replay_adds_nothing(tmp_path):
    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        cfg = msgspec.convert(CFG, AlarmsConfig)
        await put(lg, codec, "telemetry.clean", [rd(0, 90.0), rd(1, 101.0), rd(2, 99.0),
                                                 rd(3, 97.0), rd(4, 105.0)])
        await put(lg, codec, "alarms.raw", [rd(0, True, "trip", Classification.ALARM),
                                            rd(5, False, "trip", Classification.ALARM)])
        a = AlarmEvaluator("alarms", cfg, lg, codec)

        async def journal(n: int) -> bool:
            return len(await read_all(lg, codec, "alarms.clean")) >= n

        await run_until(a, lambda: journal(5))
        recs = await read_all(lg, codec, "alarms.clean")
        assert sorted((r.alarm_id, r.seq, r.event) for r in recs) == [
            ("oven-1:temp:hot", 1, "raise"), ("oven-1:temp:hot", 2, "clear"),
            ("oven-1:temp:hot", 3, "raise"),
            ("oven-1:trip:device", 1, "raise"), ("oven-1:trip:device", 2, "clear"),
        ]
        hot = next(r for r in recs if r.alarm_id == "oven-1:temp:hot")
        assert (hot.severity.value, hot.area, hot.owner, hot.limit) == ("HIGH", "ovens",
                                                                        "shift-a", 100.0)
        await put(lg, codec, "alarms.commands", [AlarmCommand(
            request_id="req-7", action=AlarmAction.ACK,
            alarm_ids=["oven-1:temp:hot", "oven-1:trip:device"], note="on it", by="ana",
            role="operator", source="10.0.0.5", gateway_time=T0)])
        b = AlarmEvaluator("alarms", cfg, lg, codec)
        await run_until(b, lambda: journal(7))
        assert b.recovered == 5
        acks = (await read_all(lg, codec, "alarms.clean"))[5:]
        assert [(r.alarm_id, r.event, r.state, r.by, r.source, r.note, r.request_id)
                for r in acks] == [
            ("oven-1:temp:hot", "ack", AlarmState.ACTIVE_ACKED, "ana", "10.0.0.5", "on it",
             "req-7"),
            ("oven-1:trip:device", "ack", AlarmState.NORMAL, "ana", "10.0.0.5", "on it", "req-7"),
        ]
        # Everything replayed from the start (a group that never committed), the same
        # command retried: nothing is raised twice, no command applied twice.
        await put(lg, codec, "alarms.commands", [AlarmCommand(
            request_id="req-7", action=AlarmAction.ACK, alarm_ids=["oven-1:temp:hot"],
            gateway_time=T0)])
        replay = AlarmEvaluator("alarms", msgspec.structs.replace(cfg, group="fresh"), lg, codec)
        async def replayed() -> bool:
            return replay.consumed >= 9

        await run_until(replay, replayed)
        assert len(await read_all(lg, codec, "alarms.clean")) == 7
        assert replay.evaluator.duplicates == 2
        m = replay.metrics()
        assert m["alarms_active_acked"] == 1.0 and m["alarms_normal"] == 1.0
        assert m["readings_ignored_total"] == 7.0
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_a_flood_is_written_to_logs_gateway(tmp_path):
    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        cfg = msgspec.convert({**CFG, "health": {"flood_alarms": 2}}, AlarmsConfig)
        await put(lg, codec, "telemetry.clean", [
            Reading(asset_id=f"oven-{i}", parameter="temp", value=150.0, device_time=T0,
                    gateway_time=T0) for i in range(3)])
        a = AlarmEvaluator("alarms", cfg, lg, codec)

        async def flood() -> bool:
            return bool(await read_all(lg, codec, "logs.gateway"))

        await run_until(a, flood)
        [ev] = await read_all(lg, codec, "logs.gateway")
        assert (ev.kind, ev.severity.value, ev.fields["new_alarms"]) == ("alarm_flood", "MAJOR",
                                                                         "3")
        assert a.metrics()["alarm_flood"] == 1.0
    finally:
        await lg.close()


def test_without_definitions_only_alarms_raw_is_read():
    def inputs(**cfg) -> list[str]:
        return AlarmEvaluator("alarms", msgspec.convert(cfg, AlarmsConfig), None, None).inputs()

    assert inputs() == ["alarms.raw"]
    assert inputs(unmatched_raw="ignore") == []
    assert inputs(**CFG) == ["telemetry.clean", "events.clean", "alarms.raw"]


@pytest.mark.anyio
async def test_a_start_reads_the_checkpoint_and_only_the_journal_written_since(tmp_path):
    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        cfg = msgspec.convert({**CFG, "checkpoint_interval_s": 0.05}, AlarmsConfig)
        await put(lg, codec, "telemetry.clean", [rd(t, 90.0 + 20 * (t % 2)) for t in range(6)])
        a = AlarmEvaluator("alarms", cfg, lg, codec, tmp_path)

        async def saved() -> bool:
            return a.checkpoints >= 1 and a.transitions >= 5

        await run_until(a, saved)
        await put(lg, codec, "telemetry.clean", [rd(6, 50.0), rd(7, 120.0)])
        await put(lg, codec, "alarms.commands", [AlarmCommand(
            request_id="r1", action=AlarmAction.ACK, alarm_ids=["oven-1:temp:hot"],
            gateway_time=T0)])
        slow = msgspec.structs.replace(cfg, checkpoint_interval_s=3600.0)
        b = AlarmEvaluator("alarms", slow, lg, codec, tmp_path)  # dies before its checkpoint

        async def caught_up() -> bool:
            return b.transitions >= 3  # counted once appended

        await run_until(b, caught_up)
        journal = await read_all(lg, codec, "alarms.clean")
        assert [r.event for r in journal] == ["raise", "clear"] * 3 + ["raise", "ack"]
        assert a.recovered == 0 and b.recovered == 0  # a's file held all it had written
        # the third start folds only what b wrote after a's checkpoint ...
        c = AlarmEvaluator("alarms", cfg, lg, codec, tmp_path)
        await c.setup()
        await c.recover()
        assert c.recovered == 3  # b's clear, raise and ack
        # ... and knows what a rebuild from the whole journal knows
        (tmp_path / "alarms.ckpt").write_bytes(b"\x00 not msgpack")
        d = AlarmEvaluator("alarms", cfg, lg, codec, tmp_path)
        await d.setup()
        await d.recover()
        assert d.recovered == len(journal)
        for x in (c, d):
            e = x.evaluator.entries["oven-1:temp:hot"]
            assert (e.seq, e.state, e.data_time) == (8, AlarmState.ACTIVE_ACKED, T0 + 7 * S)
            assert "r1" in x.evaluator.applied
            await x.teardown()
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_alarms_are_journalled_past_the_disk_block_tier(tmp_path):
    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        cfg = msgspec.convert({"tick_s": 0.05, "definitions": [
            {"kind": "stale", "name": "silent", "asset": "oven-1", "parameter": "temp",
             "for_s": 0.2}]}, AlarmsConfig)
        lg.set_blocked(True)  # the disk at its block tier: readings wait, alarms do not
        a = AlarmEvaluator("alarms", cfg, lg, codec)

        async def raised() -> bool:
            return a.transitions >= 1

        await run_until(a, raised)
        lg.set_blocked(False)
        [r] = await read_all(lg, codec, "alarms.clean")
        assert (r.alarm_id, r.event) == ("oven-1:temp:silent", "raise")
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_unwatched_streams_are_skipped_only_by_their_exact_first_bytes(tmp_path):
    """A 64-character asset id has a two-byte length: guessing its end from one byte
    would stop inside it, at a byte that here reads as a parameter length of 1. The
    unwatched stream must not be remembered by that guess, or the watched parameter of
    the same length on that asset would be skipped too."""
    asset = "a" * 63 + "\x02"
    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        cfg = msgspec.convert({"tick_s": 0.05, "definitions": [
            {"kind": "high", "name": "hot", "parameter": "pB", "limit": 100.0}]}, AlarmsConfig)

        def at(t: float, parameter: str, value: float) -> Reading:
            return msgspec.structs.replace(rd(t, value, parameter), asset_id=asset)

        await put(lg, codec, "telemetry.clean", [at(0, "pA", 500.0), at(1, "pA", 500.0),
                                                 at(2, "pB", 101.0)])
        a = AlarmEvaluator("alarms", cfg, lg, codec)

        async def raised() -> bool:
            return a.transitions >= 1

        await run_until(a, raised)
        (rec,) = await read_all(lg, codec, "alarms.clean")
        assert (rec.alarm_id, rec.event) == (f"{asset}:pB:hot", "raise")
    finally:
        await lg.close()
