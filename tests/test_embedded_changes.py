"""Embedded log: a consumer wakes on the change signal of a writer in another process
(``actors/log/changes.py``), not on its poll; without inotify it still polls."""

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
