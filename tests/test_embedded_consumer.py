"""Embedded log consumers: woken by the change signal of a writer in another process
(``actors/log/changes.py``), not by their poll (without inotify they still poll);
small fetches go on inside a stored batch without reading it again."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import pytest

from otgate.actors.log import changes, embedded_consumer
from otgate.actors.log.base import TopicSpec
from otgate.actors.log.embedded import EmbeddedLog

pytestmark = pytest.mark.anyio

WRITER = """
import sys, anyio
from otgate.actors.log.embedded import EmbeddedLog

async def main():
    lg = EmbeddedLog(sys.argv[1])
    await lg.start()
    await lg.append("t", [(b"k", b"from-another-process")])
    await lg.close()

anyio.run(main)
"""


async def _fetch_while_other_process_appends(path: Path) -> tuple[list, float]:
    lg = EmbeddedLog(path)
    await lg.start()
    await lg.ensure_topics([TopicSpec(name="t")])
    consumer = lg.consumer("g", ["t"])
    try:
        assert await consumer.fetch(10, 0.01) == []
        async with anyio.create_task_group() as tg:
            async def write() -> None:
                await anyio.sleep(0.2)  # the consumer is waiting by then
                await anyio.run_process([sys.executable, "-c", WRITER, str(path)],
                                        stdout=None, stderr=None)

            tg.start_soon(write)
            t0 = time.monotonic()
            recs = await consumer.fetch(10, timeout=25.0)
            took = time.monotonic() - t0
        return recs, took
    finally:
        await consumer.close()
        await lg.close()


@pytest.mark.skipif(changes.watch(Path(__file__)) is None, reason="no inotify here")
async def test_consumer_wakes_on_a_commit_in_another_process(tmp_path: Path, monkeypatch) -> None:
    # with the poll pushed out of reach, only the change signal can end the wait early
    monkeypatch.setattr(embedded_consumer, "POLL_S", 60.0)
    recs, took = await _fetch_while_other_process_appends(tmp_path / "log.sqlite")
    assert [r.value for r in recs] == [b"from-another-process"]
    assert took < 15.0  # the writer process starts in well under that; the poll would take 25


async def test_without_a_change_signal_the_consumer_polls(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(changes, "watch", lambda path: None)
    monkeypatch.setattr(embedded_consumer, "POLL_S", 0.05)
    recs, took = await _fetch_while_other_process_appends(tmp_path / "log.sqlite")
    assert [r.value for r in recs] == [b"from-another-process"]
    assert took < 15.0


async def test_small_fetches_go_on_inside_a_stored_batch(tmp_path: Path) -> None:
    """Fetches smaller than the stored batches continue from the batch they left
    partly unread (seek included); a batch retention deleted meanwhile is not served."""
    import msgspec

    from otgate.actors.log.config import LogConfig
    from otgate.actors.log.retention import Retention

    lg = EmbeddedLog(tmp_path / "log.sqlite")
    await lg.start()
    await lg.ensure_topics([TopicSpec(name="events.raw", retention_bytes=5000),
                            TopicSpec(name="logs.gateway")])
    try:
        for b in range(10):  # 10 batches of 10 records, ~1.6 kB each
            await lg.append("events.raw", [(b"k", b"v" * 150 + str(b * 10 + i).encode())
                                           for i in range(10)])
        c = lg.consumer("g", ["events.raw"])
        got = []
        for _ in range(6):
            got += await c.fetch(3, 0.01)
        assert [r.offset for r in got] == list(range(18))
        assert [r.value for r in got] == [r.value for r in await lg.read("events.raw", 0, 0, 18)]
        c.seek("events.raw", 0, 11)
        assert [r.offset for r in await c.fetch(4, 0.01)] == [11, 12, 13, 14]
        assert [r.offset for r in await c.fetch(2, 0.01)] == [15, 16]  # still inside batch 1
        cfg = msgspec.convert({"topics": {"events.raw": {"retention_bytes": 5000}}}, LogConfig)
        await Retention(lg, cfg, usage=lambda: 10.0, emit=None).step()
        start = (await lg.watermarks("events.raw"))[0][0]
        assert start > 20  # batch 1 (offsets 10-19) is gone
        assert (await c.fetch(2, 0.01))[0].offset == start
        await c.close()
    finally:
        await lg.close()


async def test_fetch_then_runs_the_callback_in_the_fetch_thread_without_a_watch(
    tmp_path: Path,
) -> None:
    import threading

    lg = EmbeddedLog(tmp_path / "log.db")
    await lg.start()
    await lg.ensure_topics([TopicSpec(name="t")])
    await lg.append("t", [(b"a", b"1"), (b"b", b"2")])
    consumer = lg.consumer("g", ["t"])
    seen: list[tuple[list[bytes], bool]] = []

    def then(recs: list) -> int:
        seen.append(([r.value for r in recs], threading.current_thread() is threading.main_thread()))
        return len(recs)

    try:
        recs, n = await consumer.fetch_then(10, then)
        assert [r.value for r in recs] == [b"1", b"2"] and n == 2
        assert seen == [([b"1", b"2"], False)]  # in a worker thread, with the records
        assert await consumer.fetch_then(10, then) == ([], 0)  # the position moved on
        assert await consumer.fetch(10, timeout=0) == []
        assert consumer._watch == -1  # looks that never wait open no inotify watch
    finally:
        await consumer.close()
        await lg.close()
