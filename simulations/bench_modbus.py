"""Modbus TCP bench: 20 devices x 100 points against the simulator.

Four numbers, measured in one run against one simulator process (pymodbus'
TCP server, started as a child process so its CPU is not counted as the
gateway's):

1. ceiling: bare pymodbus clients (one per device, all concurrent) issuing
   the same reads back to back and decoding nothing: points/s it could carry;
2. gateway: one ``ModbusTcpSession`` per device, ``poll_interval`` ~0 (poll as
   fast as the device answers), ``publish`` = a function that only counts:
   points/s and µs of gateway-process CPU per point (pymodbus client + otgate
   planning, decoding and Reading construction; the log's own cost is
   measured by ``otgate bench log``);
3. the same sessions through the real ``ReadingPublisher`` onto the embedded
   log (Avro + SQLite in a temp dir): the whole device → raw log path;
4. decode: otgate's own per-point cost alone (decode + Reading), no I/O.

``ratio`` is gateway points/s over ceiling points/s (with 20 devices the
single simulator process is usually the bottleneck, so both sit near the
server's limit); ``cpu_ratio`` is ceiling CPU/point over gateway CPU/point,
i.e. the share of the bare client's efficiency the gateway keeps when the
gateway side is the bottleneck.

Numbers, not pass/fail. Goals from the issue: gateway ≥ 80 % of the ceiling,
≤ 5 µs gateway CPU per point device → raw log.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

import anyio
import msgspec

from otgate.simulations.bench_rows import decode_only

TITLE = "protocols: device sessions against their simulators"

DEVICES = 20
POINTS = 100
ROUNDS = 3


def device_points() -> list[dict[str, Any]]:
    """100 points per device: 50 float32, 40 scaled int16, 10 coils (3 reads)."""
    pts: list[dict[str, Any]] = [
        {"parameter": f"f{i}", "address": 2 * i, "type": "float32",
         "signal": {"kind": "sine", "amplitude": 10.0, "offset": 50.0, "period_s": 30.0 + i}}
        for i in range(50)
    ]
    pts += [
        {"parameter": f"s{i}", "address": 100 + i, "type": "int16", "scale": 0.1,
         "signal": {"kind": "ramp", "rate_per_s": 1.0, "span": 100.0}}
        for i in range(40)
    ]
    pts += [
        {"parameter": f"c{i}", "address": i, "table": "coil", "type": "bool",
         "signal": {"kind": "toggle", "on_s": 1.0 + i, "off_s": 2.0}}
        for i in range(10)
    ]
    return pts


def sim_config(units: int) -> Any:
    from otgate.simulations.modbus_sim import ModbusTcpSimConfig

    devices = [{"unit_id": u, "points": device_points()} for u in range(1, units + 1)]
    return msgspec.convert({"devices": devices, "update_interval": 0.5}, ModbusTcpSimConfig)


def adapter_config(port: int, unit: int) -> Any:
    from otgate.protocols.modbus_tcp import ModbusTcpAdapter

    pts = [{k: v for k, v in p.items() if k != "signal"} for p in device_points()]
    raw = {
        "type": "modbus_tcp", "id": f"dev{unit}", "host": "127.0.0.1", "port": port,
        "poll_interval": 0.0001, "timeout": 2.0,
        "groups": [{"unit_id": unit, "asset_id": f"asset{unit}", "points": pts}],
    }
    return msgspec.convert(raw, ModbusTcpAdapter)


async def start_simulator(
    units: int, module: str = "otgate.simulations.bench_modbus"
) -> tuple[Any, int]:
    """``python -m MODULE --serve UNITS`` as a child process: (process, its port)."""
    proc = await anyio.open_process([sys.executable, "-m", module, "--serve", str(units)])
    assert proc.stdout is not None
    line = b""
    with anyio.fail_after(30):
        async for chunk in proc.stdout:
            line += chunk
            if b"\n" in line:
                break
    return proc, int(line.split(b"\n")[0])


async def _ceiling(port: int, units: int, seconds: float) -> tuple[float, float]:
    """Bare pymodbus clients: (points/s, µs CPU per point) for the same reads."""
    from pymodbus.client import AsyncModbusTcpClient

    from otgate.protocols.modbus.planning import plan_reads

    plans = {u: plan_reads(adapter_config(port, u).groups, adapter_config(port, u))
             for u in range(1, units + 1)}
    points_done = 0
    stop = time.monotonic() + seconds

    async def loop(unit: int) -> None:
        nonlocal points_done
        client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0, reconnect_delay=0)
        await client.connect()
        reqs = [(r.function_code, r.address, r.count, len(r.points)) for r in plans[unit]]
        try:
            while time.monotonic() < stop:
                for fc, address, count, npoints in reqs:
                    if fc == 3:
                        await client.read_holding_registers(address, count=count, device_id=unit)
                    else:
                        await client.read_coils(address, count=count, device_id=unit)
                    points_done += npoints
        finally:
            client.close()

    cpu0, t0 = time.process_time(), time.monotonic()
    async with anyio.create_task_group() as tg:
        for u in range(1, units + 1):
            tg.start_soon(loop, u)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    return points_done / wall, cpu / max(points_done, 1) * 1e6


async def _gateway(
    port: int, units: int, seconds: float, sink: Any = None
) -> tuple[float, float, dict]:
    """Sessions publishing to a counter, or through ``sink(readings)`` then counted."""
    from otgate.actors.context import BuildContext

    count = 0

    async def publish(readings: list) -> None:
        nonlocal count
        if sink is not None:
            await sink(readings)
        count += len(readings)

    ctx = BuildContext(gateway_id="bench", publish=publish, state_dir=Path("."))
    sessions = [adapter_config(port, u).build(ctx) for u in range(1, units + 1)]
    async with anyio.create_task_group() as tg:
        for s in sessions:
            await tg.start(s.run)
        # let every session connect and finish a first poll before measuring
        with anyio.fail_after(30):
            while any(s.metrics()["polls"] < 1 for s in sessions):
                await anyio.sleep(0.01)
        c0, cpu0, t0 = count, time.process_time(), time.monotonic()
        await anyio.sleep(seconds)
        c1, cpu, wall = count, time.process_time() - cpu0, time.monotonic() - t0
        tg.cancel_scope.cancel()
    done = c1 - c0
    totals: dict[str, float] = {}
    for s in sessions:
        for k, v in s.metrics().items():
            totals[k] = totals.get(k, 0) + v
    return done / wall, cpu / max(done, 1) * 1e6, totals


async def _with_embedded_log(port: int, units: int, seconds: float) -> tuple[float, float]:
    """Sessions → ``ReadingPublisher`` → embedded log in a temp dir (the whole path)."""
    import tempfile

    from otgate.actors.log.config import LogConfig
    from otgate.actors.log.open import open_log, open_publisher

    with tempfile.TemporaryDirectory(prefix="otgate-bench-") as tmp:
        cfg, state = LogConfig(), Path(tmp)
        log = await open_log(cfg, state)
        try:
            pub = await open_publisher(cfg, state, log)
            pps, cpu, _ = await _gateway(port, units, seconds, sink=pub.publish)
        finally:
            await log.close()
    return pps, cpu


def _decode_cost(n_polls: int = 2000) -> float:
    """otgate's own µs per point: decode + Reading construction, no I/O."""
    from otgate.actors.context import BuildContext
    from otgate.protocols.modbus.convert import registers_to_bytes

    async def publish(readings: list) -> None:
        return None

    session = adapter_config(1502, 1).build(
        BuildContext(gateway_id="bench", publish=publish, state_dir=Path("."))
    )
    payloads = []
    for r in session.requests:
        if r.function_code == 3:
            payloads.append(registers_to_bytes([0x4120] * r.count))
        else:
            payloads.append([True] * r.count)
    out: list = []
    t0 = time.process_time()
    for _ in range(n_polls):
        out.clear()
        for req, payload in zip(session.requests, payloads, strict=True):
            session._good(req, payload, 1, out)
    return (time.process_time() - t0) / (n_polls * POINTS) * 1e6


async def run(report: Any, args: argparse.Namespace) -> None:
    """Run the Modbus TCP bench and add its rows to ``report``."""
    quick = getattr(args, "quick", False)
    units = 5 if quick else DEVICES
    seconds = 1.0 if quick else 4.0
    report.progress(f"modbus: starting simulator ({units} devices x {POINTS} points)")
    proc, port = await start_simulator(units)
    try:
        # interleave ceiling and gateway rounds so drift in a shared machine's
        # load hits both alike; each number is the median of its rounds
        ceil, gw = [], []
        for i in range(ROUNDS):
            report.progress(f"modbus: round {i + 1}/{ROUNDS}: bare client ceiling, {seconds:.0f} s")
            ceil.append(await _ceiling(port, units, seconds))
            report.progress(f"modbus: ceiling {ceil[-1][0]:,.0f} points/s")
            report.progress(f"modbus: round {i + 1}/{ROUNDS}: gateway sessions, {seconds:.0f} s")
            pps, cpu, totals = await _gateway(port, units, seconds)
            gw.append((pps, cpu))
            report.progress(f"modbus: gateway {pps:,.0f} points/s")
        ceil_pps = median(c[0] for c in ceil)
        ceil_cpu = median(c[1] for c in ceil)
        gw_pps = median(g[0] for g in gw)
        gw_cpu = median(g[1] for g in gw)
        report.progress(f"modbus: gateway sessions -> embedded raw log, {seconds:.0f} s")
        log_pps, log_cpu = await _with_embedded_log(port, units, seconds)
        report.progress(f"modbus: gateway -> log {log_pps:,.0f} points/s")
    finally:
        proc.terminate()
        with anyio.move_on_after(5):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
    decode_us = _decode_cost(200 if quick else 2000)
    scenario = f"{units} dev x {POINTS} pts, 3 reads/poll"
    report.add(protocol="modbus_tcp", measure="bare pymodbus client loop (ceiling)",
               scenario=scenario, points_per_s=ceil_pps, cpu_us_per_point=ceil_cpu,
               ratio=1.0, cpu_ratio=1.0, goal="")
    report.add(protocol="modbus_tcp", measure="gateway sessions -> counting publish",
               scenario=scenario, points_per_s=gw_pps, cpu_us_per_point=gw_cpu,
               ratio=gw_pps / ceil_pps if ceil_pps else 0.0,
               cpu_ratio=ceil_cpu / gw_cpu if gw_cpu else 0.0,
               goal=">= 0.80 of ceiling; <= 5 us/pt")
    report.add(protocol="modbus_tcp", measure="gateway sessions -> embedded raw log",
               scenario=scenario + ", Avro + SQLite", points_per_s=log_pps,
               cpu_us_per_point=log_cpu, ratio=log_pps / ceil_pps if ceil_pps else 0.0,
               cpu_ratio=ceil_cpu / log_cpu if log_cpu else 0.0, goal="(log cost included)")
    decode_only(report, "modbus_tcp", "otgate decode + Reading only (no I/O)", decode_us)
    report.progress(
        f"modbus: gateway reads={totals.get('reads', 0):.0f} "
        f"bad_readings={totals.get('bad_readings', 0):.0f} "
        f"exceptions={totals.get('exceptions', 0):.0f} timeouts={totals.get('timeouts', 0):.0f} "
        f"garbage={totals.get('garbage', 0):.0f} disconnects={totals.get('disconnects', 0):.0f}"
    )


async def _serve(config: Any) -> None:
    from otgate.simulations.modbus_sim import run_modbus_tcp_simulator

    async with anyio.create_task_group() as tg:
        port = await tg.start(run_modbus_tcp_simulator, config)
        print(port, flush=True)


def serve_main(make_config: Callable[[int], Any]) -> None:
    """``python -m MODULE --serve N``: serve ``make_config(N)``, print the port."""
    p = argparse.ArgumentParser()
    p.add_argument("--serve", type=int, required=True)
    ns = p.parse_args()
    import logging

    logging.disable(logging.WARNING)
    anyio.run(_serve, make_config(ns.serve))


def main() -> None:
    """``python -m otgate.simulations.bench_modbus --serve N``: the bench's simulator."""
    serve_main(sim_config)


if __name__ == "__main__":
    main()
