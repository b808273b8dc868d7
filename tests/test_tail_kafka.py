"""``TopicTail`` on the Kafka backend (a real tansu broker): one consumer per tail,
kept between polls; each poll returns exactly what was appended since the last
one, across partitions and pages, although tansu under-reports the end offset
(the last batch's base offset + 1); a dropped consumer is replaced and resumes
where the tail stood; closing the operator log stops it. ``KafkaLog.read`` (behind
``otgate log read``) is the same reader, used once."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from peers.tansu import tansu_fixture  # noqa: F401

from otgate.actors.log.base import TopicSpec
from otgate.actors.log.config import Backend, LogConfig, TopicOverride
from otgate.actors.log.kafka import KafkaLog
from otgate.actors.records import AlarmAction, AlarmCommand, now_ns
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service import tail
from otgate.supervisors.service.tail import TopicTail, scan

TOPIC = "alarms.commands"


def command(i: int) -> tuple[str, AlarmCommand]:
    rid = f"r{i}"
    return rid, AlarmCommand(request_id=rid, action=AlarmAction.ACK, alarm_ids=[f"a{i}"],
                             gateway_time=now_ns())


async def polled(t: TopicTail) -> tuple[list[str], float, set[int]]:
    """The request ids a poll returned (in number order), its seconds, its partitions."""
    start = time.monotonic()
    recs = await t.poll()
    got = sorted((cmd.request_id for _rec, cmd in recs), key=lambda r: int(r[1:]))
    return got, time.monotonic() - start, {rec.partition for rec, _cmd in recs}


@pytest.mark.anyio
async def test_one_consumer_follows_the_topic(tansu, tmp_path: Path, monkeypatch) -> None:
    cfg = LogConfig(backend=Backend.KAFKA, bootstrap_servers=[tansu.bootstrap],
                    idempotence=False, linger_ms=1,
                    topics={TOPIC: TopicOverride(partitions=2)})
    oplog = OperatorLog(cfg, tmp_path)
    t = TopicTail(oplog, TOPIC)
    try:
        assert (await polled(t))[0] == []
        # 40 records in one append: one batch per partition, whose end offset tansu
        # reports as its base offset + 1; every record is returned all the same.
        await oplog.append_many(TOPIC, [command(i) for i in range(40)])
        got, _, parts = await polled(t)
        assert got == [f"r{i}" for i in range(40)] and parts == {0, 1}
        reader = t.kafka
        assert reader is not None and reader.connects == 1
        consumer = reader.consumer

        # Nothing new: nothing returned, without waiting for an idle fetch (the
        # backend's read waits 1 s per partition for that).
        got, idle, _ = await polled(t)
        assert got == [] and idle < 1.0, idle
        await oplog.append_many(TOPIC, [command(i) for i in range(40, 43)])
        got, _, _ = await polled(t)
        assert got == ["r40", "r41", "r42"]

        # More than a page: the tail reads on until it has everything.
        monkeypatch.setattr(tail, "PAGE", 4)
        await oplog.append_many(TOPIC, [command(i) for i in range(43, 53)])
        got, _, _ = await polled(t)
        assert got == [f"r{i}" for i in range(43, 53)]
        assert (t.kafka, reader.consumer, reader.connects) == (reader, consumer, 1)

        # A consumer dropped (as after an error) is replaced and seeks where the tail stood.
        await reader.close()
        await oplog.append_many(TOPIC, [command(53)])
        got, _, _ = await polled(t)
        assert got == ["r53"] and reader.connects == 2
        assert reader.consumer is not None and reader.consumer is not consumer

        # A topic written faster than it is read: a poll and a scan still end, and
        # the tail goes on where it stopped (nothing skipped, nothing twice).
        seen = [*got]
        written = 54

        async def write_until_cancelled() -> None:
            nonlocal written
            while True:
                await oplog.append_many(TOPIC, [command(written + i) for i in range(5)])
                written += 5

        async with anyio.create_task_group() as tg:
            tg.start_soon(write_until_cancelled)
            await anyio.sleep(0.5)
            with anyio.fail_after(20):
                seen += (await polled(t))[0]
                scanned = [rec async for rec in scan(oplog, TOPIC)]
            tg.cancel_scope.cancel()
        assert len(scanned) >= 54
        seen += (await polled(t))[0]
        nums = sorted(int(r[1:]) for r in seen)  # the append cancelled last may have landed
        assert nums == list(range(53, nums[-1] + 1)) and nums[-1] >= written - 1
    finally:
        await oplog.close()
    assert t.kafka is not None and t.kafka.consumer is None  # stopped with the log


@pytest.mark.anyio
async def test_a_read_ends_at_what_was_there_without_an_idle_fetch(tansu) -> None:
    log = KafkaLog(tansu.bootstrap, idempotence=False)
    await log.start()
    try:
        await log.ensure_topics([TopicSpec(name="t", partitions=1)])
        await log.append("t", [(b"k", b"%d" % i) for i in range(40)])  # one batch: end 1
        with anyio.fail_after(20):  # a read that waited for an idle fetch takes 60 s
            recs = await log.read("t", 0, 0, 1000, idle_s=60)
            assert [r.value for r in recs] == [b"%d" % i for i in range(40)]
            assert [r.offset for r in await log.read("t", 0, 38, 1000, idle_s=60)] == [38, 39]
        # inside the last batch, past the end offset tansu reports: read all the same
        assert [r.offset for r in await log.read("t", 0, 25, 1)] == [25]
        assert await log.read("t", 0, 40, 10, idle_s=0.2) == []  # at the end: nothing
    finally:
        await log.close()
