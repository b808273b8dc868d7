"""One contract, both log backends: embedded SQLite and Kafka (tansu broker).

Ordering per key, dense offsets, group commit and resume, replay from an
offset, and a writer process SIGKILLed mid-stream (every acknowledged record
is there, no record is torn).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
from peers.tansu import Tansu, start_tansu

from otgate.actors.log.base import LogRecord, TopicSpec
from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.kafka import KafkaLog


@pytest.fixture(scope="module")
def broker() -> Iterator[Tansu]:
    t = start_tansu()
    try:
        yield t
    finally:
        t.stop()


def _spec(kind: str, tmp_path: Path, broker_addr: str | None) -> dict:
    if kind == "embedded":
        return {"kind": "embedded", "path": str(tmp_path / "log.sqlite")}
    return {"kind": "kafka", "bootstrap": broker_addr}


def make(spec: dict):
    if spec["kind"] == "embedded":
        return EmbeddedLog(spec["path"])
    return KafkaLog(spec["bootstrap"], idempotence=False, linger_ms=1)


@pytest.fixture(params=["embedded", "kafka"])
def spec(request, tmp_path: Path) -> dict:
    if request.param == "kafka":
        return _spec("kafka", tmp_path, request.getfixturevalue("broker").bootstrap)
    return _spec("embedded", tmp_path, None)


@pytest.fixture
async def log(spec: dict) -> AsyncIterator:
    lg = make(spec)
    await lg.start()
    try:
        yield lg
    finally:
        await lg.close()


def topic_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def consume(consumer, n: int, within: float = 30.0) -> list[LogRecord]:
    """Fetch until ``n`` records came or the deadline passed (then return what came)."""
    out: list[LogRecord] = []
    with anyio.move_on_after(within):
        while len(out) < n:
            out += await consumer.fetch(max_records=2000, timeout=1.0)
    return out


def value(key: str, i: int) -> bytes:
    body = f"{key}:{i}".encode()
    return body + b"|" + hashlib.sha256(body).hexdigest().encode()


def check_value(v: bytes) -> tuple[str, int]:
    body, digest = v.rsplit(b"|", 1)
    assert hashlib.sha256(body).hexdigest().encode() == digest, f"torn record {v!r}"
    key, i = body.decode().rsplit(":", 1)
    return key, int(i)


@pytest.mark.anyio
async def test_order_per_key_and_dense_offsets(log) -> None:
    topic = topic_name()
    await log.ensure_topics([TopicSpec(name=topic, partitions=3)])
    keys = [f"asset-{k}" for k in range(7)]
    n_per_key = 60
    for start in range(0, n_per_key, 20):  # several appends, keys interleaved
        batch = [(k.encode(), value(k, i)) for i in range(start, start + 20) for k in keys]
        await log.append(topic, batch)
    await log.append(topic, [(keys[0].encode(), value(keys[0], n_per_key))])  # small path
    c = log.consumer(f"g-{uuid.uuid4().hex[:6]}", [topic])
    try:
        recs = await consume(c, len(keys) * n_per_key + 1)
    finally:
        await c.close()
    assert len(recs) == len(keys) * n_per_key + 1
    seen: dict[str, list[int]] = {}
    part_of: dict[str, int] = {}
    offsets: dict[int, list[int]] = {}
    for r in recs:
        k, i = check_value(r.value)
        assert r.key == k.encode()
        seen.setdefault(k, []).append(i)
        assert part_of.setdefault(k, r.partition) == r.partition, "a key changed partition"
        offsets.setdefault(r.partition, []).append(r.offset)
    for k in keys:
        want = list(range(n_per_key + 1)) if k == keys[0] else list(range(n_per_key))
        assert seen[k] == want, f"{k} out of order"
    for p, offs in offsets.items():
        assert offs == list(range(len(offs))), f"partition {p} offsets not dense from 0"
    assert len(offsets) > 1, "keys should spread over partitions"


@pytest.mark.anyio
async def test_group_commit_and_resume(log) -> None:
    topic = topic_name()
    group = f"g-{uuid.uuid4().hex[:6]}"
    await log.ensure_topics([TopicSpec(name=topic, partitions=1)])
    await log.append(topic, [(b"k", value("k", i)) for i in range(100)])
    c = log.consumer(group, [topic])
    try:
        got = await consume(c, 100)
        assert [check_value(r.value)[1] for r in got] == list(range(100))
        await c.commit({(topic, 0): 40})  # pretend only 40 reached the destination
    finally:
        await c.close()
    await log.append(topic, [(b"k", value("k", i)) for i in range(100, 120)])
    c2 = log.consumer(group, [topic])
    try:
        again = await consume(c2, 80)
    finally:
        await c2.close()
    assert [r.offset for r in again] == list(range(40, 120))
    assert [check_value(r.value)[1] for r in again] == list(range(40, 120))


@pytest.mark.anyio
async def test_replay_from_offset(log) -> None:
    topic = topic_name()
    await log.ensure_topics([TopicSpec(name=topic, partitions=1)])
    await log.append(topic, [(b"k", value("k", i)) for i in range(50)])
    c = log.consumer(f"g-{uuid.uuid4().hex[:6]}", [topic])
    try:
        first = await consume(c, 50)
        assert len(first) == 50
        c.seek(topic, 0, 17)
        replay = await consume(c, 33)
    finally:
        await c.close()
    assert [r.offset for r in replay] == list(range(17, 50))
    assert [check_value(r.value)[1] for r in replay] == list(range(17, 50))


@pytest.mark.anyio
async def test_watermarks_bound_what_was_appended(spec: dict, log) -> None:
    """Oldest offset 0 and a next offset no higher than what was appended, call
    after call (exact on the embedded log; a lower bound on tansu, PEERS.md)."""
    topic = topic_name()
    await log.ensure_topics([TopicSpec(name=topic, partitions=2)])
    assert await log.watermarks(topic) == {0: (0, 0), 1: (0, 0)}
    for n in (40, 80):
        await log.append(topic, [(f"k{i}".encode(), value(f"k{i}", i)) for i in range(40)])
        marks = await log.watermarks(topic)
        assert set(marks) == {0, 1} and all(low == 0 for low, _ in marks.values())
        total = sum(high for _, high in marks.values())
        if spec["kind"] == "kafka":
            assert 0 < total <= n
        else:
            assert total == n


@pytest.mark.anyio
async def test_separate_groups_are_independent(log) -> None:
    topic = topic_name()
    await log.ensure_topics([TopicSpec(name=topic, partitions=2)])
    await log.append(topic, [(f"a{i % 5}".encode(), value(f"a{i % 5}", i)) for i in range(40)])
    ga, gb = log.consumer("ga-" + topic, [topic]), log.consumer("gb-" + topic, [topic])
    try:
        ra, rb = await consume(ga, 40), await consume(gb, 40)
    finally:
        await ga.close()
        await gb.close()
    assert len(ra) == len(rb) == 40


WRITER = r"""
import sys, json, hashlib, anyio
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["tests"])
from test_log_contract import make, value
async def main():
    log = make(spec)
    await log.start()
    i = 0
    while True:
        batch = [(b"w", value("w", i + j)) for j in range(spec["batch"])]
        await log.append(spec["topic"], batch)
        i += len(batch)
        print(i, flush=True)
anyio.run(main)
"""


@pytest.mark.anyio
async def test_writer_killed_mid_batch_loses_no_acked_record(spec: dict, log) -> None:
    topic = topic_name()
    await log.ensure_topics([TopicSpec(name=topic, partitions=1)])
    child = {**spec, "topic": topic, "batch": 500, "tests": str(Path(__file__).parent)}
    proc = subprocess.Popen(  # noqa: ASYNC220 (fork only; reads go through a thread)
        [sys.executable, "-c", WRITER, json.dumps(child)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked = 0
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while acked < 5000 and time.monotonic() < deadline:
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
            if not line:
                pytest.fail(f"writer exited early: {proc.stderr.read() if proc.stderr else ''}")
            acked = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-batch: it writes continuously
        proc.wait(10)
    assert acked >= 5000
    c = log.consumer(f"g-{uuid.uuid4().hex[:6]}", [topic])
    try:
        recs = await consume(c, acked, within=30)
        # drain what else is there (records written but not yet acknowledged)
        while more := await c.fetch(max_records=5000, timeout=1.0):
            recs += more
    finally:
        await c.close()
    seqs = [check_value(r.value)[1] for r in recs]  # raises on a torn record
    assert seqs == list(range(len(seqs))), "gap or reorder in the writer's records"
    assert len(seqs) >= acked, f"lost acknowledged records: {acked} acked, {len(seqs)} read"


CONCURRENT = r"""
import sys, json, anyio
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["tests"])
from test_log_contract import make, value
async def main():
    log = make(spec)
    await log.start()
    w = spec["writer"]
    for i in range(0, spec["n"], 50):
        await log.append(spec["topic"], [(w.encode(), value(w, i + j)) for j in range(50)])
    await log.close()
anyio.run(main)
"""


@pytest.mark.anyio
async def test_embedded_several_processes_append_to_one_partition(tmp_path: Path) -> None:
    """Bulkheads are processes: offsets stay dense and unique, each writer's
    records stay in its order, nothing is lost."""
    spec = _spec("embedded", tmp_path, None)
    lg = make(spec)
    await lg.start()
    topic = topic_name()
    await lg.ensure_topics([TopicSpec(name=topic, partitions=1)])
    n, writers = 2000, 3
    procs = [
        await anyio.open_process(
            [
                sys.executable,
                "-c",
                CONCURRENT,
                json.dumps(
                    {
                        **spec,
                        "topic": topic,
                        "writer": f"w{k}",
                        "n": n,
                        "tests": str(Path(__file__).parent),
                    }
                ),
            ]
        )
        for k in range(writers)
    ]
    try:
        with anyio.fail_after(120):
            for p in procs:
                assert await p.wait() == 0
        c = lg.consumer("check", [topic])
        recs = await consume(c, n * writers)
        await c.close()
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
        await lg.close()
    assert [r.offset for r in recs] == list(range(n * writers))
    per: dict[str, list[int]] = {}
    for r in recs:
        k, i = check_value(r.value)
        per.setdefault(k, []).append(i)
    assert per == {f"w{k}": list(range(n)) for k in range(writers)}


@pytest.mark.anyio
async def test_append_waits_while_the_log_cannot_take_records(spec: dict, log, request) -> None:
    """Backpressure: a stalled log (broker frozen / write lock held by another
    process) makes append wait, never drop; it completes once the log moves."""
    import sqlite3

    topic = topic_name()
    await log.ensure_topics([TopicSpec(name=topic, partitions=1)])
    await log.append(topic, [(b"k", value("k", 0))])  # metadata loaded, partitions known
    blocker: sqlite3.Connection | None = None
    broker = request.getfixturevalue("broker") if spec["kind"] == "kafka" else None
    if broker is not None:
        os.kill(broker.proc.pid, signal.SIGSTOP)
    else:
        blocker = sqlite3.connect(spec["path"], isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
    done = anyio.Event()
    try:

        async def producer() -> None:
            await log.append(topic, [(b"k", value("k", i)) for i in range(1, 101)])
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            with anyio.move_on_after(1.0):
                await done.wait()
            assert not done.is_set(), "append returned while the log was stalled"
            if broker is not None:
                os.kill(broker.proc.pid, signal.SIGCONT)
                broker = None
            else:
                assert blocker is not None
                blocker.execute("ROLLBACK")
            with anyio.fail_after(30):
                await done.wait()
    finally:
        if broker is not None:
            os.kill(broker.proc.pid, signal.SIGCONT)
        if blocker is not None:
            blocker.close()
    c = log.consumer(f"g-{uuid.uuid4().hex[:6]}", [topic])
    try:
        recs = await consume(c, 101)
    finally:
        await c.close()
    assert [check_value(r.value)[1] for r in recs] == list(range(101))
