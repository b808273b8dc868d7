"""``otgate bench alarms``: latency from a device change to ``alarms.clean``, and
what the alarm evaluator costs the pipeline.

The pipeline bench's plant (a real ``otgate run``, 20 synthetic devices of
100 points, validator, aggregator, PostgreSQL sink) with high-limit alarms on
10 points of every device (sines crossing their limits: ~13 transitions/s).
Latency of one transition = the time its record was appended to
``alarms.clean`` minus the device time of the reading that caused it: the
whole path device → raw → validator → clean → evaluator → journal, split at
the reading's appends to ``telemetry.raw`` and ``telemetry.clean`` (a record's
append time is its transaction's start, once the log's write gate is held). The devices offer 20k points/s
for this run, a load the pipeline carries here: at the pipeline bench's offer
(above its capacity) the latency is the validator's growing backlog.

The latency run is made in both layouts: the aggregator in the processing
bulkhead beside the validator and the evaluator (the default: one event loop,
the stages take turns every few ms, ``stage_turns``), and in a bulkhead of its
own (``[processing] aggregator_apart``), with each layout's processing CPU
per point (every processing bulkhead), so the two can be weighed.

Then the plant (default layout) runs at the pipeline bench's offer, with and
without the evaluator: the points/s that land in PostgreSQL and the processing
bulkheads' CPU per point (validator, evaluator and aggregator: the evaluator
reads every clean reading; those of streams no definition watches are
skipped by their first bytes).

Where the processing time goes, per run: each stage's busy time per point
(wall time inside its batch step, its appends and commits included: the
stages share one event loop, so it includes the others' turns), its own CPU
per point (thread CPU of its batch loop: decode, checks, encode; not the
fetch and append threads), its wall time per batch in appends (the log's
write gate and fsync; for the evaluator, its journal appends per batch),
its batches/s, its input commits/s and its turns/s (the times its step let
the others of its loop run mid-batch), from the stages' own metrics on
``/health`` (CPU and append time: the stages that report them).

What is watched: 10 of the 100 points of every device, 200 of 2,000 streams
(10 %): the evaluator decodes and judges those and skips the other 90 % by
their first bytes. A plant's alarm list usually covers a minority of its
tags; the row "alarm definitions" says what this run watched.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import anyio
import psutil

from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.stage_codec import LogCodec, decode
from otgate.simulations.bench_pipeline import DEVICES, POINTS, _config, _cpu, _rows
from otgate.simulations.bench_supervision import _poll
from otgate.simulations.gateway_process import GatewayProcess
from otgate.simulations.postgres_server import PostgresServer

TITLE = "otgate bench alarms"
LATENCY_INTERVAL = 0.1
"""20 devices x 100 points every 0.1 s: 20k points/s, a load the pipeline carries here."""
CAPACITY_INTERVAL = 0.02
"""The pipeline bench's offer (100k points/s, above what it carries): capacity runs."""
WATCHED = 10
"""Points per device with a high-limit alarm (p000 ... p009)."""

# Every device serves the same sines: limits spread over the sine's range make
# the 10 alarms of a device cross at different moments of its period.
ALARMS = "\n[processing.alarms]\ntick_s = 0.1\ndefinitions = [\n" + "".join(
    f'  {{ kind = "high", name = "hi{j}", parameter = "p00{j}", limit = {-9.0 + 2 * j},'
    f' deadband = 0.5 }},\n' for j in range(WATCHED)
) + "]\n"


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _latencies(state: Path, since_ns: int) -> dict[str, list[float]]:
    """Per transition since ``since_ns``, in ms: device time → its reading appended to
    ``telemetry.raw`` (the device session), that append → the reading appended to
    ``telemetry.clean`` (the validator), and that append → the transition appended to
    ``alarms.clean`` (the evaluator)."""
    lg = EmbeddedLog(state / "log.sqlite")
    await lg.start()
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        journal: dict[tuple[str, str, int], int] = {}
        for r in await _read(lg, "alarms.clean"):
            a = await decode(codec, "alarms.clean", r.value)
            if a.event in ("raise", "clear") and a.device_time and a.device_time >= since_ns:
                journal[(a.asset_id, a.parameter, a.device_time)] = r.timestamp_ns
        appended = {topic: await _appended(lg, codec, topic, journal)
                    for topic in ("telemetry.raw", "telemetry.clean")}
        out: dict[str, list[float]] = {"session": [], "validator": [], "evaluator": []}
        for key, done in journal.items():
            raw, clean = appended["telemetry.raw"].get(key), appended["telemetry.clean"].get(key)
            if raw is not None and clean is not None:
                out["session"].append((raw - key[2]) / 1e6)
                out["validator"].append((clean - raw) / 1e6)
                out["evaluator"].append((done - clean) / 1e6)
        return out
    finally:
        await lg.close()


async def _appended(lg: EmbeddedLog, codec: LogCodec, topic: str,
                    keys: dict[tuple[str, str, int], int]) -> dict[tuple[str, str, int], int]:
    """When each reading of ``keys`` was appended to ``topic`` (the first time)."""
    out: dict[tuple[str, str, int], int] = {}
    for r in await _read(lg, topic):
        row = codec.row_decoder(topic, r.value, _KEY, {})
        key = row(r.value, 5) if row else _key(await decode(codec, topic, r.value))
        if key in keys:
            out.setdefault(key, r.timestamp_ns)
    return out


_KEY = "(f_asset_id, f_parameter, f_device_time)"


def _key(r) -> tuple[str, str, int]:
    return (r.asset_id, r.parameter, r.device_time)


async def _read(lg: EmbeddedLog, topic: str) -> list:
    c = lg.consumer(f"bench-{time.time_ns()}", [topic])
    out = []
    while recs := await c.fetch(50_000, 0.1):
        out += recs
    await c.close()
    return out


def _run(report, window: float, interval: float, evaluator: bool, latency: bool = False,
         apart: bool = False) -> dict:
    pg = PostgresServer()
    pg.init()
    pg.start()
    label = ("with the evaluator" if evaluator else "evaluator off") + (
        ", aggregator apart" if apart else "")
    with tempfile.TemporaryDirectory(prefix="otgate-bench-") as tmp:
        state = Path(tmp) / "state"
        cfg = Path(tmp) / "bench.toml"
        text = _config(state, pg.dsn(), interval)
        text += f"[processing]\naggregator_apart = {'true' if apart else 'false'}\n"
        text += ALARMS if evaluator else "[processing.alarms]\nenabled = false\n"
        cfg.write_text(text)
        gw = GatewayProcess(cfg).start()
        try:
            _poll(lambda: gw.health()["status"] == "HEALTHY", 60, 0.1)
            report.progress(f"{label}: gateway up, offering {DEVICES * POINTS / interval:,.0f} "
                            f"points/s; warming up 5 s")
            time.sleep(5)
            parts = PARTS if apart else PARTS[:1]
            procs = {pid: psutil.Process(gw.component(pid)["pid"]) for pid in parts}
            since = time.time_ns()
            s0 = _stages(gw, parts)
            c0, r0, t0 = sum(_cpu(procs).values()), _rows(pg.dsn()), time.monotonic()
            report.progress(f"{label}: measuring for {window:g} s")
            time.sleep(window)
            c1, r1, t1 = sum(_cpu(procs).values()), _rows(pg.dsn()), time.monotonic()
            s1 = _stages(gw, parts)
        finally:
            gw.stop()
            pg.cleanup()
        n = max(1, r1 - r0)
        out: dict = {"points_per_s": (r1 - r0) / (t1 - t0), "us_per_point": (c1 - c0) / n * 1e6}
        out["stages"] = {
            sid: {"busy_us_per_point": (m.get("busy_seconds_total", 0.0)
                                        - s0[sid].get("busy_seconds_total", 0.0)) / n * 1e6,
                  "cpu_us_per_point": (m.get("cpu_seconds_total", 0.0)
                                       - s0[sid].get("cpu_seconds_total", 0.0)) / n * 1e6,
                  "append_ms_per_batch": (m.get("append_seconds_total", 0.0)
                                          - s0[sid].get("append_seconds_total", 0.0)) * 1e3
                  / max(1.0, m.get("batches_total", 0.0) - s0[sid].get("batches_total", 0.0)),
                  "batches_per_s": (m.get("batches_total", 0.0)
                                    - s0[sid].get("batches_total", 0.0)) / (t1 - t0),
                  "commits_per_s": (m.get("commits_total", 0.0)
                                    - s0[sid].get("commits_total", 0.0)) / (t1 - t0),
                  "turns_per_s": (m.get("turns_total", 0.0)
                                  - s0[sid].get("turns_total", 0.0)) / (t1 - t0)}
            for sid, m in s1.items() if sid in s0
        }
        if latency:
            report.progress("reading the journal, telemetry.raw and telemetry.clean back")
            parts = anyio.run(_latencies, state, since)
            parts["total"] = [sum(t) for t in zip(*parts.values(), strict=True)]
            out["latency"] = {name: (len(v), _percentile(v, 0.5), _percentile(v, 0.99),
                                     max(v, default=float("nan")))
                              for name, v in parts.items()}
        return out


STAGES = ("validator", "aggregator", "alarms")
PARTS = ("processing", "aggregation")
"""The bulkheads of the stages (the second one with the aggregator apart)."""


def _stages(gw: GatewayProcess, parts: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """The processing stages' metrics, by actor id."""
    found: dict[str, dict[str, float]] = {}
    todo = [gw.component(pid) for pid in parts]
    while todo:
        node = todo.pop()
        if node["id"] in STAGES:
            found[node["id"]] = node.get("metrics", {})
        todo += node.get("children", [])
    return found


def _add_stages(report, label: str, r: dict) -> None:
    for sid in STAGES:
        st = r["stages"].get(sid)
        if st is not None:
            report.add(stage=f"  {label}: {sid}", busy_us_per_point=st["busy_us_per_point"],
                       cpu_us_per_point=st["cpu_us_per_point"] or "",
                       append_ms_per_batch=st["append_ms_per_batch"] or "",
                       batches_per_s=st["batches_per_s"], commits_per_s=st["commits_per_s"],
                       turns_per_s=st["turns_per_s"])


LAYOUTS = (("default layout", False), ("aggregator apart", True))


def _measure(report, window: float) -> None:
    lat = {name: _run(report, window, LATENCY_INTERVAL, evaluator=True, latency=True,
                      apart=apart) for name, apart in LAYOUTS}
    on = _run(report, window, CAPACITY_INTERVAL, evaluator=True)
    off = _run(report, window, CAPACITY_INTERVAL, evaluator=False)
    for layout, r in lat.items():
        for name, key in ((f"{layout}: device change → alarms.clean", "total"),
                          ("  device → telemetry.raw (session)", "session"),
                          ("  telemetry.raw → telemetry.clean (validator)", "validator"),
                          ("  telemetry.clean → alarms.clean (evaluator)", "evaluator")):
            n, p50, p99, top = r["latency"][key]
            row = {"stage": name, "transitions": n, "p50_ms": p50, "p99_ms": p99,
                   "max_ms": top, "points_per_s": r["points_per_s"]}
            if key == "total":
                row.update(goal="p99 < 100 ms", ratio=f"{p99 / 100:.2f}",
                           processing_us_per_point=r["us_per_point"])
            report.add(**row)
        _add_stages(report, layout, r)
    report.add(stage="alarm definitions", watched=f"{WATCHED * DEVICES} of {POINTS * DEVICES}"
               f" streams ({WATCHED / POINTS:.0%})")
    for name, r in (("pipeline with the evaluator", on), ("pipeline, evaluator off", off)):
        report.add(stage=name, points_per_s=r["points_per_s"],
                   processing_us_per_point=r["us_per_point"])
        _add_stages(report, name.removeprefix("pipeline").strip(" ,"), r)
    report.add(stage="with / without", points_per_s=on["points_per_s"] / off["points_per_s"],
               processing_us_per_point=on["us_per_point"] / off["us_per_point"],
               goal="points/s ≥ 0.90")


async def run(report, args) -> None:
    window = 10.0 if args.quick else 30.0
    await anyio.to_thread.run_sync(_measure, report, window)
