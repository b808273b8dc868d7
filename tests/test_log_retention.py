"""Retention and disk tiers of the embedded log: time/size retention, drop raw
covered by aggregates, evict lowest priority first, block at 95 %, alarms and
DLQs never evicted, every eviction recorded in logs.gateway."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import msgspec
import pytest

from otgate.actors.log.config import LogConfig
from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.publisher import Codec, Decoder
from otgate.actors.log.retention import DiskGuard, Retention, Tier, event_writer, filesystem_usage
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.log.topics import topic_specs
from otgate.actors.records import GatewayEvent, Severity

S = 1_000_000_000
DAY = 86400 * S


class Clock:
    def __init__(self) -> None:
        self.now = time.time_ns()

    def __call__(self) -> int:
        return self.now


async def setup(tmp_path: Path, cfg: LogConfig, clock: Clock):
    lg = EmbeddedLog(tmp_path / "log.sqlite", clock=clock)
    await lg.start()
    await lg.ensure_topics(topic_specs(cfg))
    store = EmbeddedSchemaStore(lg)
    codec = Codec(store)
    await codec.prepare("logs.gateway")
    return lg, codec, Decoder(store)


async def fill(lg: EmbeddedLog, topic: str, batches: int, per: int = 100) -> None:
    for b in range(batches):
        await lg.append(topic, [(b"k", b"v" * 150 + str(b * per + i).encode()) for i in range(per)])


async def gateway_events(lg: EmbeddedLog, dec: Decoder) -> list[GatewayEvent]:
    recs = await lg.read("logs.gateway", 0, 0, 10_000)
    return [await dec.decode_async("logs.gateway", r.value) for r in recs]


async def starts(lg: EmbeddedLog, topic: str) -> tuple[int, int]:
    return (await lg.watermarks(topic))[0]


@pytest.mark.anyio
async def test_time_retention_never_touches_alarms_or_dlq(tmp_path) -> None:
    cfg, clock = LogConfig(), Clock()
    lg, codec, dec = await setup(tmp_path, cfg, clock)
    try:
        for t in ("telemetry.raw", "events.raw", "alarms.raw", "dlq.telemetry"):
            await fill(lg, t, 3)
        clock.now += 8 * DAY  # past telemetry.raw's 7 days, not events.raw's 30
        await fill(lg, "telemetry.raw", 1)  # a fresh batch that must stay
        r = Retention(lg, cfg, usage=lambda: 10.0, emit=event_writer(lg, codec), clock=clock)
        events = await r.step()
        assert await starts(lg, "telemetry.raw") == (300, 400)
        assert await starts(lg, "events.raw") == (0, 300)
        assert await starts(lg, "alarms.raw") == (0, 300)
        assert await starts(lg, "dlq.telemetry") == (0, 300)
        logged = await gateway_events(lg, dec)
        assert [e.kind for e in events] == ["log_overflow"]
        assert logged == events
        assert logged[0].fields == {
            "topic": "telemetry.raw",
            "partition": "0",
            "records": "300",
            "up_to_offset": "300",
            "reason": "retention_time",
        }
        # a consumer that was behind continues at the new start
        c = lg.consumer("late", ["telemetry.raw"])
        got = await c.fetch(1000, timeout=1)
        await c.close()
        assert [x.offset for x in got] == list(range(300, 400))
        clock.now += 400 * DAY  # alarms/dlq have no retention at all
        await r.step()
        assert await starts(lg, "alarms.raw") == (0, 300)
        assert await starts(lg, "dlq.telemetry") == (0, 300)
        assert await starts(lg, "events.raw") == (300, 300)
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_retention_keeps_what_a_group_has_not_read(tmp_path, caplog) -> None:
    cfg, clock = LogConfig(), Clock()
    lg, codec, _ = await setup(tmp_path, cfg, clock)
    try:
        await fill(lg, "telemetry.raw", 5)
        slow = lg.consumer("validator", ["telemetry.raw"])
        await slow.commit({("telemetry.raw", 0): 150})  # read 150 of 500
        clock.now += 8 * DAY  # all of it past telemetry.raw's 7 days
        r = Retention(lg, cfg, usage=lambda: 10.0, emit=event_writer(lg, codec), clock=clock)
        (e,) = await r.step()
        assert await starts(lg, "telemetry.raw") == (100, 500)  # the batch holding 150 stays
        assert e.fields["up_to_offset"] == "150" and e.fields["records"] == "100"
        assert r.held_back == 350
        assert "retention_held_back topic=telemetry.raw partition=0 group=validator" in caplog.text
        await r.step()
        assert caplog.text.count("retention_held_back") == 1  # said once, not every pass
        assert await lg.groups() == [("validator", "telemetry.raw", 0, 150, 500)]
        assert await lg.drop_group("validator") == 1  # an operator forgets a removed group
        assert await lg.drop_group("validator") == 0
        await r.step()
        assert await starts(lg, "telemetry.raw") == (500, 500)
        assert r.held_back == 0
        await slow.close()
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_size_retention_keeps_newest_bytes(tmp_path) -> None:
    cfg = msgspec.convert({"topics": {"events.raw": {"retention_bytes": 5000}}}, LogConfig)
    lg, codec, dec = await setup(tmp_path, cfg, Clock())
    try:
        await fill(lg, "events.raw", 10, per=10)  # ~1.6 kB per batch
        r = Retention(lg, cfg, usage=lambda: 10.0, emit=event_writer(lg, codec))
        await r.step()
        start, nxt = await starts(lg, "events.raw")
        assert nxt == 100 and 60 <= start <= 80 and start % 10 == 0
        (e,) = await gateway_events(lg, dec)
        assert e.fields["reason"] == "retention_bytes"
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_disk_tiers_alert_drop_raw_evict_block(tmp_path) -> None:
    cfg, clock = LogConfig(), Clock()
    lg, codec, dec = await setup(tmp_path, cfg, clock)
    disk = {"pct": 75.0}
    try:
        r = Retention(lg, cfg, usage=lambda: disk["pct"], emit=event_writer(lg, codec), clock=clock)
        await fill(lg, "telemetry.raw", 4)
        await fill(lg, "alarms.raw", 2)
        await fill(lg, "dlq.telemetry", 2)
        await fill(lg, "events.raw", 4)

        events = await r.step()  # 75 %: alert only
        assert r.tier is Tier.ALERT
        assert [(e.kind, e.severity) for e in events] == [("disk_tier", Severity.WARNING)]
        assert await starts(lg, "telemetry.raw") == (0, 400)

        clock.now += 120 * S
        await fill(lg, "telemetry.1min", 1, per=5)  # aggregates cover raw up to now - 60 s
        await fill(lg, "telemetry.raw", 1)  # newer raw: not covered
        disk["pct"] = 85.0
        events = await r.step()
        assert r.tier is Tier.DROP_RAW
        assert await starts(lg, "telemetry.raw") == (400, 500)
        assert await starts(lg, "events.raw") == (0, 400)
        assert [e.fields.get("reason") for e in events if e.kind == "log_overflow"] == [
            "disk_drop_raw"
        ]

        # 92 %: evict lowest priority first until usage is under 90 %;
        # usage falls as records go (a stand-in for the filesystem)
        base = _left_sync(lg)
        disk["pct"] = 92.0
        r.usage = lambda: 87.0 + 5.0 * _left_sync(lg) / base
        events = await r.step()
        assert r.tier is Tier.DROP_RAW  # back under the evict tier
        evicted = [e.fields["topic"] for e in events if e.kind == "log_overflow"]
        assert evicted[0] == "telemetry.raw" and "events.raw" in evicted  # by priority
        assert await starts(lg, "alarms.raw") == (0, 200)
        assert await starts(lg, "dlq.telemetry") == (0, 200)

        # 96 %: producers block; a critical event is written anyway
        r.usage = lambda: 96.0
        events = await r.step()
        assert r.tier is Tier.BLOCK and lg.blocked
        assert (events[-1].kind, events[-1].severity) == ("disk_block", Severity.CRITICAL)
        done = anyio.Event()

        async def producer() -> None:
            await lg.append("telemetry.raw", [(b"k", b"late")])
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            with anyio.move_on_after(0.3):
                await done.wait()
            assert not done.is_set(), "append went through at 96 %"
            r.usage = lambda: 50.0
            await r.step()
            with anyio.fail_after(5):
                await done.wait()
        assert r.tier is Tier.OK and not lg.blocked
        kinds = [e.kind for e in await gateway_events(lg, dec)]
        assert "disk_block" in kinds and kinds.count("log_overflow") >= 2
    finally:
        await lg.close()


def _left_sync(lg: EmbeddedLog) -> int:
    import sqlite3

    con = sqlite3.connect(lg.path)
    try:
        (n,) = con.execute(
            "SELECT COALESCE(SUM(p.next_offset - p.start_offset), 0) FROM partitions p"
            " JOIN topics t ON t.tid = p.tid WHERE t.name IN ('telemetry.raw', 'events.raw')"
        ).fetchone()
        return n
    finally:
        con.close()


def test_disk_guard_and_filesystem_usage(tmp_path) -> None:
    pct = filesystem_usage(tmp_path)()
    assert 0.0 <= pct <= 100.0

    async def main() -> None:
        lg = EmbeddedLog(tmp_path / "g.sqlite")
        await lg.start()
        try:
            g = DiskGuard(lg, LogConfig(), usage=lambda: 97.0)
            assert g.check() and lg.blocked
            g.usage = lambda: 60.0
            assert not g.check() and not lg.blocked
        finally:
            await lg.close()

    anyio.run(main)


def test_disk_tiers_must_be_ordered() -> None:
    with pytest.raises(msgspec.ValidationError, match="alert_pct <= drop_raw_pct"):
        msgspec.convert({"disk_tiers": {"alert_pct": 85, "drop_raw_pct": 80}}, LogConfig)
    with pytest.raises(msgspec.ValidationError, match="never evicted"):
        msgspec.convert({"topics": {"alarms.raw": {"retention_s": 10}}}, LogConfig)


@pytest.mark.anyio
async def test_log_maintenance_actor_applies_retention(tmp_path) -> None:
    from otgate.actors.log.actor import LogMaintenance
    from otgate.actors.messages import State

    cfg = msgspec.convert(
        {"retention_interval_s": 0.05, "topics": {"events.raw": {"retention_bytes": 2000}}},
        LogConfig,
    )
    lg, _codec, dec = await setup(tmp_path, cfg, Clock())
    try:
        await fill(lg, "events.raw", 5, per=10)
        actor = LogMaintenance("log-maint", lg, cfg, tmp_path)
        async with anyio.create_task_group() as tg:
            await tg.start(actor.run)
            with anyio.fail_after(10):  # the overflow event lands in logs.gateway
                while not any(e.kind == "log_overflow" for e in await gateway_events(lg, dec)):
                    await anyio.sleep(0.02)
            assert actor.state in (State.RUNNING, State.DEGRADED)  # real disk usage
            assert actor.metrics()["log_evicted_records"] > 0
            tg.cancel_scope.cancel()
        start, nxt = await starts(lg, "events.raw")
        assert nxt == 50 and start > 0
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_lock_timeout_is_a_retriable_append_error(tmp_path) -> None:
    import sqlite3

    from otgate.actors.log.embedded import UnknownTopic, is_retriable

    lg = EmbeddedLog(tmp_path / "l.sqlite", busy_timeout_s=0.2)
    await lg.start()
    await lg.ensure_topics(topic_specs(LogConfig()))
    holder = sqlite3.connect(lg.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process keeps the write lock
    try:
        with pytest.raises(sqlite3.OperationalError) as e:
            await lg.append("events.raw", [(b"k", b"v")])
        assert is_retriable(e.value)
        holder.execute("ROLLBACK")
        await lg.append("events.raw", [(b"k", b"v")])  # and a retry goes through
        with pytest.raises(UnknownTopic) as u:
            await lg.append("no.such.topic", [(b"k", b"v")])
        assert not is_retriable(u.value)
    finally:
        holder.close()
        await lg.close()


@pytest.mark.anyio
async def test_disk_tiers_never_delete_what_a_consumer_has_not_processed(tmp_path) -> None:
    """Disk pressure deletes only what every consumer group committed past; with
    nothing else to delete the tier stays up (producers block at 95 %)."""
    cfg, clock = LogConfig(), Clock()
    lg, codec, _ = await setup(tmp_path, cfg, clock)
    try:
        await fill(lg, "telemetry.raw", 6)  # offsets 0..599, one batch per 100
        consumer = lg.consumer("validator", ["telemetry.raw"])
        await consumer.commit({("telemetry.raw", 0): 250})  # processed 0..249
        await lg.consumer("late-sink", ["telemetry.raw"]).commit({("telemetry.raw", 0): 600})
        clock.now += 120 * S
        await fill(lg, "telemetry.1min", 1, per=5)  # aggregates cover every raw record
        r = Retention(lg, cfg, usage=lambda: 85.0, emit=event_writer(lg, codec), clock=clock)
        await r.step()  # drop_raw: covered, but only up to what the validator processed
        assert await starts(lg, "telemetry.raw") == (200, 600)  # whole batches below 250
        r.usage = lambda: 92.0  # nothing frees space: evict can delete no further
        await r.step()
        assert await starts(lg, "telemetry.raw") == (200, 600)
        assert r.tier is Tier.EVICT
        await consumer.commit({("telemetry.raw", 0): 600})  # the validator caught up
        await r.step()
        assert (await starts(lg, "telemetry.raw"))[0] >= 500
    finally:
        await lg.close()
