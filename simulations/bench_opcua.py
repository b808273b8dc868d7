"""OPC UA bench: 1,000 monitored items against the simulator.

The simulator (an asyncua Server, ``opcua_sim``) runs as a child process so
its CPU is not counted as the gateway's; every variable changes every
``UPDATE_S``. Three numbers from one run:

1. ceiling: a bare asyncua subscription (iterator mode) on the same items,
   counting notifications and decoding nothing: notifications/s it carries
   and µs of process CPU each;
2. gateway: one ``OpcUaSession`` (subscription mode) whose ``publish`` only
   counts: points/s and µs of gateway-process CPU per point (asyncua's
   decoding + otgate's StatusCode/timestamp/value mapping + Reading);
3. otgate's own per-point cost alone (notification → Reading, no I/O).

Numbers, not pass/fail. Goal from the issue: ≤ 5 µs gateway CPU per point
device → raw log; the asyncua client's own decoding is most of row 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import anyio
import msgspec

from otgate.simulations.bench_rows import ceiling_and_gateway, decode_only

TITLE = "protocols: OPC UA session against its simulator"

ITEMS = 1000
UPDATE_S = 0.1
ROUNDS = 2


def sim_config(items: int) -> Any:
    from otgate.simulations.opcua_sim_config import OpcUaSimConfig

    return OpcUaSimConfig(generate=items, update_interval=UPDATE_S)


def source(url: str, items: int) -> Any:
    from otgate.protocols.opcua import OpcUaSource

    return msgspec.convert(
        {
            "type": "opcua",
            "id": "bench",
            "endpoint": url,
            "mode": "subscription",
            "publishing_interval_ms": 100,
            "sampling_interval_ms": 0,
            "queue_size": 1,
            "points": [
                {"node_id": f"ns=2;s=gen{i:05d}", "asset_id": f"a{i // 100}", "parameter": f"p{i}"}
                for i in range(items)
            ],
        },
        OpcUaSource,
    )


async def _start_simulator(items: int) -> tuple[Any, str]:
    proc = await anyio.open_process(
        [sys.executable, "-m", "otgate.simulations.bench_opcua", "--serve", str(items)],
        stderr=None,
    )
    assert proc.stdout is not None
    line = b""
    with anyio.fail_after(60):
        while not line.endswith(b"\n"):
            line += await proc.stdout.receive(1)
    return proc, line.decode().strip()


async def _ceiling(url: str, items: int, seconds: float) -> tuple[float, float]:
    from asyncua import Client, ua

    client = Client(url, timeout=10)
    await client.connect()
    try:
        sub = await client.create_subscription(100, queue_maxsize=100_000)
        nodes = [client.get_node(f"ns=2;s=gen{i:05d}") for i in range(items)]
        await sub.subscribe_data_change(nodes, queuesize=1, sampling_interval=0.0)
        queue = sub._event_queue
        count = 0
        warm_until = time.monotonic() + 1.0
        while time.monotonic() < warm_until:
            await sub.next_event()
            while not queue.empty():
                queue.get_nowait()
        t0, c0 = time.monotonic(), time.process_time()
        while time.monotonic() - t0 < seconds:
            event = await sub.next_event()
            count += 1
            while not queue.empty():
                event = queue.get_nowait()
                count += 1
            del event
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
        _ = ua
    finally:
        await client.disconnect()
    return count / wall, cpu / count * 1e6 if count else 0.0


async def _gateway(url: str, items: int, seconds: float) -> tuple[float, float, dict[str, float]]:
    from pathlib import Path

    from otgate.actors.context import BuildContext

    counted = [0]

    async def publish(batch: list[Any]) -> None:
        counted[0] += len(batch)

    session = source(url, items).build(
        BuildContext(gateway_id="bench", publish=publish, state_dir=Path("."))
    )
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        with anyio.fail_after(30):
            while counted[0] < items:
                await anyio.sleep(0.05)
        await anyio.sleep(1.0)  # warm-up, as for the ceiling
        n0, t0, c0 = counted[0], time.monotonic(), time.process_time()
        await anyio.sleep(seconds)
        n, wall, cpu = counted[0] - n0, time.monotonic() - t0, time.process_time() - c0
        tg.cancel_scope.cancel()
    return n / wall, cpu / n * 1e6 if n else 0.0, session.metrics()


def _decode_cost(n: int) -> float:
    """µs per notification → Reading inside the session, no I/O."""
    from datetime import UTC, datetime
    from pathlib import Path

    from asyncua import ua
    from asyncua.common.subscription import DataChangeEvent, DataChangeNotif

    from otgate.actors.context import BuildContext
    from otgate.protocols.opcua.session import OpcUaSession

    async def publish(batch: list[Any]) -> None:
        return None

    session = source("opc.tcp://127.0.0.1:1", ITEMS).build(
        BuildContext(gateway_id="bench", publish=publish, state_dir=Path("."))
    )
    assert isinstance(session, OpcUaSession)
    now = datetime.now(UTC)
    events = []
    for i in range(ITEMS):
        item = ua.MonitoredItemNotification()
        item.ClientHandle = 1000 + i
        item.Value = ua.DataValue(ua.Variant(float(i)), SourceTimestamp=now, ServerTimestamp=now)
        events.append(DataChangeEvent(node=None, value=float(i), data=DataChangeNotif(None, item)))
    handle, emitter = session._handle, session.emitter
    c0 = time.process_time()
    done = 0
    while done < n:
        for event in events:
            handle(event, True)
        done += len(events)
        emitter.pending.clear()
    return (time.process_time() - c0) / done * 1e6


async def run(report: Any, args: argparse.Namespace) -> None:
    """Run the OPC UA bench and add its rows to ``report``."""
    quick = getattr(args, "quick", False)
    items = 200 if quick else ITEMS
    seconds = 2.0 if quick else 5.0
    report.progress(f"opcua: starting simulator ({items} variables, every {UPDATE_S}s)")
    proc, url = await _start_simulator(items)
    try:
        ceil, gw = [], []
        totals: dict[str, float] = {}
        for i in range(ROUNDS):
            report.progress(
                f"opcua: round {i + 1}/{ROUNDS}: bare asyncua subscription, {seconds:.0f} s"
            )
            ceil.append(await _ceiling(url, items, seconds))
            report.progress(f"opcua: ceiling {ceil[-1][0]:,.0f} notifications/s")
            report.progress(f"opcua: round {i + 1}/{ROUNDS}: gateway session, {seconds:.0f} s")
            pps, cpu, totals = await _gateway(url, items, seconds)
            gw.append((pps, cpu))
            report.progress(f"opcua: gateway {pps:,.0f} points/s, {cpu:.1f} us/pt")
    finally:
        proc.terminate()
        with anyio.move_on_after(5):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
    ceil_pps = sum(c[0] for c in ceil) / ROUNDS
    ceil_cpu = sum(c[1] for c in ceil) / ROUNDS
    gw_pps = sum(g[0] for g in gw) / ROUNDS
    gw_cpu = sum(g[1] for g in gw) / ROUNDS
    decode_us = _decode_cost(20_000 if quick else 200_000)
    scenario = f"{items} items, change every {UPDATE_S * 1000:.0f} ms"
    ceiling_and_gateway(
        report, "opcua", scenario,
        ("bare asyncua subscription (ceiling)", ceil_pps, ceil_cpu),
        ("gateway session -> counting publish", gw_pps, gw_cpu),
        "<= 5 us/pt",
    )
    decode_only(report, "opcua", "otgate notification -> Reading only (no I/O)", decode_us)
    report.progress(
        f"opcua: notifications={totals.get('notifications', 0):.0f} "
        f"queue_high_water={totals.get('client_queue_high_water', 0):.0f} "
        f"bad={totals.get('readings_bad', 0):.0f}"
    )


async def _serve(items: int) -> None:
    from otgate.simulations.opcua_sim import run_opcua_simulator

    async with anyio.create_task_group() as tg:
        url = await tg.start(run_opcua_simulator, sim_config(items))
        print(url, flush=True)


def main() -> None:
    """``python -m otgate.simulations.bench_opcua --serve N``: the bench's simulator."""
    p = argparse.ArgumentParser()
    p.add_argument("--serve", type=int, required=True)
    anyio.run(_serve, p.parse_args().serve)


if __name__ == "__main__":
    main()
