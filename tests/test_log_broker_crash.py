"""Broker-crash durability: tansu on S3 storage (alocals3), kill -9 of the
broker while the Kafka backend appends, restart: every acknowledged record
is there, none is torn (duplicates are allowed: tansu needs idempotence off).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import anyio
import pytest
from peers.alocals3 import S3, alocals3, tansu_env  # noqa: F401
from peers.tansu import start_tansu

from otgate.actors.log.base import TopicSpec
from otgate.actors.log.kafka import KafkaLog

pytestmark = pytest.mark.slow

BATCH = 500


def value(i: int) -> bytes:
    body = f"r{i}".encode() + b"." * 150
    return body + b"|" + hashlib.sha256(body).hexdigest()[:16].encode()


def seq_of(v: bytes) -> int:
    body, digest = v.rsplit(b"|", 1)
    assert hashlib.sha256(body).hexdigest()[:16].encode() == digest, f"torn record {v[:40]!r}"
    return int(body.split(b".", 1)[0][1:])


@pytest.mark.anyio
async def test_acknowledged_records_survive_broker_kill(alocals3: S3, tmp_path: Path) -> None:  # noqa: F811
    broker = start_tansu("s3://tansu/", env=tansu_env(alocals3), log_path=tmp_path / "tansu.log")
    try:
        topic = "durable"
        log = KafkaLog(broker.bootstrap, idempotence=False, linger_ms=5, request_timeout_s=5)
        await log.start()
        await log.ensure_topics([TopicSpec(name=topic, partitions=1)])
        acked = 0
        errors: list[BaseException] = []

        async def writer() -> None:
            nonlocal acked
            i = 0
            while True:
                try:
                    await log.append(topic, [(b"k", value(i + j)) for j in range(BATCH)])
                except Exception as e:  # the broker is gone: unacknowledged, stop
                    errors.append(e)
                    return
                i += BATCH
                acked = i

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            with anyio.fail_after(120):
                while acked < 5 * BATCH:
                    await anyio.sleep(0.01)
            broker.kill()  # SIGKILL mid-stream: the writer keeps appending
            acked_at_kill = acked
            with anyio.move_on_after(15):
                while not errors:
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        await log.close()
        assert acked >= acked_at_kill >= 5 * BATCH

        broker.restart()
        reader = KafkaLog(broker.bootstrap, idempotence=False)
        got: list[int] = []
        with anyio.fail_after(120):
            while len(set(got)) < acked:
                recs = await reader.read(topic, 0, len(got), 100_000, idle_s=3)
                if not recs and got:
                    break
                got += [seq_of(r.value) for r in recs]
        have = set(got)
        missing = [i for i in range(acked) if i not in have]
        assert not missing, f"{len(missing)} acknowledged records lost, first {missing[:5]}"
    finally:
        broker.stop()


class _StopRaisesCancelled:
    """What aiokafka's client does when stopped while a fetch retries against a
    dead broker: its fetcher awaits the task it cancelled, CancelledError escapes."""

    async def stop(self) -> None:
        raise asyncio.CancelledError


@pytest.mark.anyio
async def test_a_client_stop_that_raises_cancelled_does_not_cancel_the_caller() -> None:
    from otgate.actors.log.kafka_reader import stop_client

    ran_on = []
    async with anyio.create_task_group() as tg:

        async def neighbour() -> None:
            await anyio.sleep(0.2)
            ran_on.append("neighbour")

        tg.start_soon(neighbour)
        await stop_client(_StopRaisesCancelled())  # type: ignore[arg-type]
        ran_on.append("caller")
    assert ran_on == ["caller", "neighbour"]


@pytest.mark.anyio
async def test_a_real_cancellation_around_a_client_stop_still_cancels() -> None:
    from otgate.actors.log.kafka_reader import stop_client

    with anyio.move_on_after(0.1) as scope:
        await anyio.sleep(1)
        await stop_client(_StopRaisesCancelled())  # type: ignore[arg-type]
    assert scope.cancelled_caught
