"""``otgate bench peer``: otgate next to a C peer, Modbus TCP device → Kafka.

The peer is collectd 5.12 (Debian ``collectd-core``): its ``modbus`` read
plugin and its ``write_kafka`` output (librdkafka, JSON). otgate is a real
``otgate run``: 20 ``modbus_tcp`` sessions in one bulkhead writing Avro
readings to ``telemetry.raw`` through the Kafka log backend. Both run, one
after the other, against the same simulator (pymodbus, 20 unit ids x 100
points: 50 float32 + 50 int16 x 0.1, served from one child process) and the
same tansu broker (memory storage); both produce with acks=all, linger 5 ms.

Rate: a fixed poll interval (1 s, collectd's ``Interval`` and otgate's
``poll_interval``), i.e. the same offered 2,000 points/s for both. Not "as
fast as possible": collectd's modbus plugin sends one request per point (it
never merges registers; otgate reads the 100 points in 2 requests), so at
full speed it is capped by the single-process simulator long before either
side's own CPU, and the comparison would measure the simulator.
``OTGATE_BENCH_PEER_INTERVAL=S`` sets another interval for both.

Counting is at the broker: after a side has stopped, its topic is fetched
from the start and every record whose (producer) timestamp lies in the
measuring window is counted — one record is one point for both (collectd
sends one value list per message). ``end_offsets`` only bounds the fetch
(tansu under-reports it by the last batch). CPU is user + system time of
the side's whole process tree (collectd and its librdkafka threads; otgate's
root, fork server and bulkhead), sampled at the window's edges; the
simulator and the broker are not counted (the simulator's CPU per point is
shown apart: what each side costs the device). Numbers, not pass/fail; goal
from the issue: otgate's CPU per point ≤ collectd's.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import anyio
import msgspec
import psutil

from otgate.simulations.bench_log import start_tansu
from otgate.simulations.bench_modbus import serve_main, start_simulator
from otgate.simulations.collectd_peer import (
    CollectdProcess,
    collectd_config,
    collectd_version,
    ensure_collectd,
    librdkafka_dir,
)
from otgate.simulations.gateway_process import GatewayProcess

TITLE = "peer: otgate vs collectd, Modbus TCP device -> Kafka (same simulator, same broker)"

DEVICES, POINTS, FLOATS = 20, 100, 50
INTERVAL = 1.0
COLLECTD_TOPIC = "collectd.raw"
OTGATE_TOPIC = "telemetry.raw"


def peer_points() -> list[dict[str, Any]]:
    """Holding registers only (collectd's plugin reads no coils): 50 float32, 50 int16."""
    pts: list[dict[str, Any]] = [
        {"parameter": f"f{i}", "address": 2 * i, "type": "float32",
         "signal": {"kind": "sine", "amplitude": 10.0, "offset": 50.0, "period_s": 30.0 + i}}
        for i in range(FLOATS)
    ]
    pts += [
        {"parameter": f"s{i}", "address": 2 * FLOATS + i, "type": "int16", "scale": 0.1,
         "signal": {"kind": "ramp", "rate_per_s": 1.0, "span": 100.0}}
        for i in range(POINTS - FLOATS)
    ]
    return pts


def collectd_data() -> list[tuple[str, int, str, float]]:
    kinds = {"float32": "Float", "int16": "Int16"}
    return [(p["parameter"], p["address"], kinds[p["type"]], p.get("scale", 1.0))
            for p in peer_points()]


def sim_config(units: int) -> Any:
    from otgate.simulations.modbus_sim import ModbusTcpSimConfig

    devices = [{"unit_id": u, "points": peer_points()} for u in range(1, units + 1)]
    return msgspec.convert({"devices": devices, "update_interval": 0.5}, ModbusTcpSimConfig)


def otgate_config(
    state: Path, modbus_port: int, units: int, bootstrap: str, interval: float
) -> str:
    points = ", ".join(
        "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in p.items() if k != "signal")
        + " }"
        for p in peer_points()
    )
    members = ", ".join(f'"dev{u}"' for u in range(1, units + 1))
    out = [
        f'[gateway]\nid = "bench-peer"\nstate_dir = "{state}"\n'
        f'[log]\nbackend = "kafka"\nbootstrap_servers = ["{bootstrap}"]\nidempotence = false\n'
        f'[[bulkheads]]\nid = "devices"\nmembers = [{members}]\n'
    ]
    for u in range(1, units + 1):
        out.append(
            f'[[adapters]]\ntype = "modbus_tcp"\nid = "dev{u}"\nhost = "127.0.0.1"\n'
            f"port = {modbus_port}\npoll_interval = {interval}\ntimeout = 2.0\n"
            f'[[adapters.groups]]\nunit_id = {u}\nasset_id = "asset{u}"\npoints = [{points}]\n'
        )
    return "".join(out)


def _otgate_reads_per_poll() -> int:
    from otgate.protocols.modbus.planning import plan_reads
    from otgate.protocols.modbus_tcp import ModbusTcpAdapter

    pts = [{k: v for k, v in p.items() if k != "signal"} for p in peer_points()]
    cfg = msgspec.convert({"type": "modbus_tcp", "id": "d", "host": "127.0.0.1",
                           "groups": [{"unit_id": 1, "asset_id": "a", "points": pts}]},
                          ModbusTcpAdapter)
    return len(plan_reads(cfg.groups, cfg))


def tree_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds user + system, RSS MiB) of ``pid`` and all its descendants."""
    cpu = rss = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            cpu += t.user + t.system
            rss += p.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            continue
    return cpu, rss


async def _consumer(bootstrap: str, topic: str) -> tuple[Any, list[Any]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         auto_offset_reset="earliest")
    await c.start()
    try:
        await c.topics()  # fetch metadata
    except BaseException:
        await c.stop()
        raise
    tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
    return c, tps


async def wait_for_records(bootstrap: str, topic: str, check: Callable[[], None]) -> None:
    """Until the topic holds a record (the side is connected end to end)."""
    with anyio.fail_after(60):
        while True:
            check()
            c, tps = await _consumer(bootstrap, topic)
            try:
                if tps and sum((await c.end_offsets(tps)).values()) > 0:
                    return
            finally:
                await c.stop()
            await anyio.sleep(0.2)


async def count_in_window(bootstrap: str, topic: str, t0: float, t1: float) -> tuple[int, int]:
    """(records stamped in [t0, t1), all records): fetch the topic to its end."""
    c, tps = await _consumer(bootstrap, topic)
    lo, hi = int(t0 * 1000), int(t1 * 1000)
    inside = total = 0
    try:
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        # tansu reports the last batch's base offset + 1: fetching until the
        # position reaches it returns that whole batch too
        ends = await c.end_offsets(tps)
        with anyio.fail_after(120):
            while [tp for tp in tps if await c.position(tp) < ends[tp]]:
                for records in (await c.getmany(timeout_ms=500)).values():
                    total += len(records)
                    inside += sum(1 for r in records if lo <= r.timestamp < hi)
    finally:
        await c.stop()
    return inside, total


@dataclass
class Rig:
    """What both sides share: the simulator, the broker, the scenario."""

    tmp: Path
    collectd: Path
    lib_dir: Path | None
    bootstrap: str
    sim_pid: int
    sim_port: int
    units: int
    interval: float


@dataclass
class Side:
    name: str
    topic: str
    start: Callable[[], Awaitable[int]]
    """Start the side; its root PID."""
    stop: Callable[[], Awaitable[None]]
    check: Callable[[], None]
    """Raises (with the side's log) once the side has exited."""


async def measure(
    report: Any, rig: Rig, side: Side, warmup: float, window: float
) -> dict[str, float]:
    """Start a side, wait for its first record, measure one window, stop, count."""
    try:
        pid = await side.start()
        await wait_for_records(rig.bootstrap, side.topic, side.check)
        report.progress(f"peer: {side.name} pid={pid} delivering; warming up {warmup:g} s")
        await anyio.sleep(warmup)
        (c0, _), (s0, _), t0 = tree_usage(pid), tree_usage(rig.sim_pid), time.time()
        await anyio.sleep(window)
        side.check()
        (c1, rss), (s1, _), t1 = tree_usage(pid), tree_usage(rig.sim_pid), time.time()
    finally:
        await side.stop()
    inside, total = await count_in_window(rig.bootstrap, side.topic, t0, t1)
    pts = max(inside, 1)
    r = {"points_per_s": inside / (t1 - t0), "cpu_us_per_point": (c1 - c0) / pts * 1e6,
         "sim_cpu_us_per_point": (s1 - s0) / pts * 1e6, "rss_mib": rss}
    report.progress(
        f"peer: {side.name} {r['points_per_s']:,.0f} points/s, "
        f"{r['cpu_us_per_point']:.1f} µs CPU/point ({inside:,} of {total:,} records in the window)"
    )
    return r


async def _create_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def run(report: Any, args: argparse.Namespace) -> None:
    """Run collectd and otgate in turn (interleaved rounds); add their rows to ``report``."""
    quick = getattr(args, "quick", False)
    units = 5 if quick else DEVICES
    warmup, window, rounds = (1.0, 3.0, 1) if quick else (3.0, 15.0, 2)
    interval = float(os.environ.get("OTGATE_BENCH_PEER_INTERVAL", INTERVAL))
    report.progress("peer: checking Debian packages (collectd-core and the plugins' libraries)")
    binary = await anyio.to_thread.run_sync(ensure_collectd)
    with tempfile.TemporaryDirectory(prefix="otgate-bench-peer-") as tmp_s:
        tmp = Path(tmp_s)
        lib_dir, rdkafka = librdkafka_dir(tmp)
        report.progress(f"peer: collectd {binary} with {rdkafka}")
        tansu, port = await anyio.to_thread.run_sync(start_tansu, tmp)
        sim, sim_port = await start_simulator(units, "otgate.simulations.bench_peer")
        rig = Rig(tmp, binary, lib_dir, f"127.0.0.1:{port}", sim.pid, sim_port, units, interval)
        report.progress(f"peer: tansu on {rig.bootstrap}, simulator {units} x {POINTS} points "
                        f"on port {sim_port}; poll interval {interval:g} s")
        results: dict[str, list[dict[str, float]]] = {"collectd": [], "otgate": []}
        try:
            for i in range(rounds):
                sides = [_collectd_side(rig, i), _otgate_side(rig, i)]
                for side in sides if i % 2 == 0 else sides[::-1]:
                    report.progress(f"peer: round {i + 1}/{rounds}: {side.name}")
                    results[side.name].append(await measure(report, rig, side, warmup, window))
        finally:
            sim.terminate()
            with anyio.move_on_after(5):
                await sim.wait()
            if sim.returncode is None:
                sim.kill()
            tansu.terminate()
            tansu.wait(10)
    _rows(report, results, units, interval, f"collectd {collectd_version(binary)}", rdkafka)


def _collectd_side(rig: Rig, i: int) -> Side:
    topic = f"{COLLECTD_TOPIC}.{i}"
    conf = rig.tmp / f"collectd-{i}.conf"
    conf.write_text(collectd_config(tmp=rig.tmp, modbus_port=rig.sim_port, units=rig.units,
                                    data=collectd_data(), interval=rig.interval,
                                    bootstrap=rig.bootstrap, topic=topic))
    proc = CollectdProcess(rig.collectd, conf, rig.lib_dir)

    async def start() -> int:
        await _create_topic(rig.bootstrap, topic)  # 1 partition, as otgate's
        proc.start()
        assert proc.proc is not None
        return proc.proc.pid

    async def stop() -> None:
        await anyio.to_thread.run_sync(proc.stop)

    def check() -> None:
        if proc.proc is None or proc.proc.poll() is not None:
            raise RuntimeError(f"collectd exited:\n{proc.log()[-2000:]}")

    return Side("collectd", topic, start, stop, check)


def _otgate_side(rig: Rig, i: int) -> Side:
    conf = rig.tmp / f"otgate-{i}.toml"
    conf.write_text(
        otgate_config(rig.tmp / f"state-{i}", rig.sim_port, rig.units, rig.bootstrap, rig.interval)
    )
    gw = GatewayProcess(conf)

    async def start() -> int:
        await anyio.to_thread.run_sync(gw.start)
        assert gw.proc is not None
        return gw.proc.pid

    async def stop() -> None:
        if gw.proc is not None:
            await anyio.to_thread.run_sync(gw.stop)

    def check() -> None:
        if gw.proc is None or gw.proc.poll() is not None:
            raise RuntimeError(f"otgate exited:\n{gw.log()[-2000:]}")

    return Side("otgate", OTGATE_TOPIC, start, stop, check)


def _rows(report: Any, results: dict[str, list[dict[str, float]]], units: int,
          interval: float, collectd: str, rdkafka: str) -> None:
    import aiokafka

    med = {side: {k: median(r[k] for r in rs) for k in rs[0]} for side, rs in results.items()}
    base = med["collectd"]
    scenario = f"{units} dev x {POINTS} pts, poll {interval:g} s"
    meta = {
        # collectd's modbus plugin sends one request per Data block (point)
        "collectd": (f"{collectd} modbus -> write_kafka (JSON)", POINTS,
                     rdkafka.split(" (")[0]),
        "otgate": ("otgate modbus_tcp -> kafka log (Avro)", _otgate_reads_per_poll(),
                   f"aiokafka {aiokafka.__version__}"),
    }
    for side in ("collectd", "otgate"):
        m = med[side]
        pipeline, reads, client = meta[side]
        report.add(
            side=pipeline, scenario=scenario, reads_per_poll=reads, kafka_client=client,
            points_per_s=m["points_per_s"], cpu_us_per_point=m["cpu_us_per_point"],
            pps_vs_collectd=m["points_per_s"] / base["points_per_s"] if base["points_per_s"] else 0.0,
            cpu_vs_collectd=m["cpu_us_per_point"] / base["cpu_us_per_point"]
            if base["cpu_us_per_point"] else 0.0,
            sim_cpu_us_per_point=m["sim_cpu_us_per_point"], rss_mib=m["rss_mib"],
            goal="" if side == "collectd" else "cpu_vs_collectd <= 1.00",
        )


if __name__ == "__main__":
    serve_main(sim_config)
