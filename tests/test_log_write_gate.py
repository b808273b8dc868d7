"""The embedded log's write gate: one writer at a time across processes, a
killed holder frees it, and appends and commits wait for it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import anyio
import pytest

from otgate.actors.log.base import TopicSpec
from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.write_gate import gate_for, gate_path

HOLDER = """
import sys, time
from pathlib import Path
from otgate.actors.log.write_gate import gate_for
with gate_for(Path(sys.argv[1])).hold():
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
time.sleep(60)
"""


def start_holder(log_path, hold_s: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(log_path), str(hold_s)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_a_writer_waits_for_the_holder_in_another_process(tmp_path) -> None:
    log_path = tmp_path / "log.db"
    proc = start_holder(log_path, 0.5)
    try:
        t0 = time.monotonic()
        gate = gate_for(log_path)
        with gate.hold():
            waited = time.monotonic() - t0
        assert 0.3 < waited < 5, waited
        assert gate.waits == 1
        assert gate_path(log_path).exists()
    finally:
        stop(proc)


def test_a_holder_killed_9_frees_the_gate(tmp_path) -> None:
    log_path = tmp_path / "log.db"
    proc = start_holder(log_path, 3600)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    t0 = time.monotonic()
    with gate_for(log_path).hold():
        assert time.monotonic() - t0 < 1


def test_the_same_thread_may_hold_it_again(tmp_path) -> None:
    gate = gate_for(tmp_path / "log.db")
    with gate.hold(), gate.hold():
        pass
    with gate.hold():  # released at the outer exit
        pass


@pytest.mark.anyio
async def test_appends_and_commits_queue_behind_the_gate(tmp_path) -> None:
    log_path = tmp_path / "log.db"
    lg = EmbeddedLog(log_path)
    await lg.start()
    try:
        await lg.ensure_topics([TopicSpec(name="t")])
        await lg.append("t", [(None, b"a")])
        proc = start_holder(log_path, 0.6)
        try:
            t0 = anyio.current_time()
            await lg.append("t", [(None, b"b")])
            assert anyio.current_time() - t0 > 0.3  # waited for the other process
            c = lg.consumer("g", ["t"])
            got = await c.fetch(10, timeout=1)
            assert [r.value for r in got] == [b"a", b"b"]
            await c.commit({("t", 0): 2})
            await c.close()
        finally:
            stop(proc)
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_appends_that_wait_for_the_gate_share_one_transaction(tmp_path) -> None:
    """The batch is taken once the gate is held: appends that came while another
    process held it go in one transaction (one fsync), in the order they came."""
    log_path = tmp_path / "log.db"
    lg = EmbeddedLog(log_path)
    await lg.start()
    try:
        await lg.ensure_topics([TopicSpec(name="t")])
        proc = start_holder(log_path, 0.5)
        try:
            before = lg.transactions
            async with anyio.create_task_group() as tg:
                for i in range(5):
                    tg.start_soon(lg.append, "t", [(None, b"%d" % i)])
                    await anyio.sleep(0.02)  # the first one's writer already waits
            assert lg.transactions - before == 1
        finally:
            stop(proc)
        c = lg.consumer("g", ["t"])
        assert [r.value for r in await c.fetch(10, timeout=1)] == [b"0", b"1", b"2", b"3", b"4"]
        await c.close()
    finally:
        await lg.close()
