"""The Modbus simulators: signal-fed values and scheduled fault injection,
observed through the gateway's own session (a real client)."""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path

import anyio
import msgspec
import pytest
from peers.modbus import Collector

from otgate.actors.context import BuildContext
from otgate.actors.messages import State
from otgate.actors.records import Quality
from otgate.protocols.modbus_rtu import ModbusRtuAdapter
from otgate.protocols.modbus_tcp import ModbusTcpAdapter
from otgate.simulations.modbus_sim import (
    ModbusRtuSimConfig,
    ModbusTcpSimConfig,
    run_modbus_rtu_simulator,
    run_modbus_tcp_simulator,
)

pytestmark = pytest.mark.anyio

SIM_POINTS = [
    {"parameter": "temp", "address": 0, "type": "float32",
     "signal": {"kind": "sine", "amplitude": 10.0, "offset": 50.0, "period_s": 1.0}},
    {"parameter": "state", "address": 2, "type": "uint16", "classification": "EVENT",
     "signal": {"kind": "step", "levels": [0, 1, 2], "hold_s": 0.2}},
    {"parameter": "trip", "address": 3, "type": "bit", "bit": 3, "classification": "ALARM",
     "signal": {"kind": "toggle", "on_s": 0.2, "off_s": 0.2}},
    {"parameter": "running", "address": 7, "table": "coil", "type": "bool",
     "signal": {"kind": "toggle", "on_s": 0.3, "off_s": 0.3}},
]


def gateway_points() -> list[dict]:
    return [{k: v for k, v in p.items() if k != "signal"} for p in SIM_POINTS]


def tcp_sim(**faults) -> ModbusTcpSimConfig:
    return msgspec.convert(
        {"devices": [{"unit_id": 1, "points": SIM_POINTS}], "update_interval": 0.02,
         "faults": faults},
        ModbusTcpSimConfig,
    )


def tcp_adapter(port: int, **kw) -> ModbusTcpAdapter:
    raw = {"type": "modbus_tcp", "id": "sim", "host": "127.0.0.1", "port": port,
           "poll_interval": 0.03, "timeout": 0.2, "reconnect_min": 0.05, "reconnect_max": 0.2,
           "groups": [{"unit_id": 1, "asset_id": "line", "points": gateway_points()}], **kw}
    return msgspec.convert(raw, ModbusTcpAdapter)


def ctx(sink: Collector) -> BuildContext:
    return BuildContext(gateway_id="gw", publish=sink, state_dir=Path("."))


async def test_signals_drive_every_point_kind() -> None:
    sink = Collector()
    async with anyio.create_task_group() as tg:
        port = await tg.start(run_modbus_tcp_simulator, tcp_sim())
        session = tcp_adapter(port).build(ctx(sink))
        await tg.start(session.run)
        await sink.wait_for(
            lambda: len({round(r.value) for r in sink.readings if r.parameter == "temp"}) >= 5
            and len({r.value for r in sink.readings if r.parameter == "state"}) == 3
            and len({r.value for r in sink.readings if r.parameter == "trip"}) == 2
            and len({r.value for r in sink.readings if r.parameter == "running"}) == 2,
            what="every signal moving",
        )
        tg.cancel_scope.cancel()
    temps = [r.value for r in sink.readings if r.parameter == "temp"]
    assert all(39.9 <= t <= 60.1 for t in temps)
    states = [r.value for r in sink.readings if r.parameter == "state"]
    assert all(a != b for a, b in itertools.pairwise(states))  # EVENT: changes only


async def test_scheduled_disconnects_and_reboots_recover() -> None:
    sink = Collector()
    cfg = tcp_sim(disconnect_every_s=0.3, reboot_every_s=0.8, reboot_down_s=0.3)
    async with anyio.create_task_group() as tg:
        port = await tg.start(run_modbus_tcp_simulator, cfg)
        session = tcp_adapter(port).build(ctx(sink))
        await tg.start(session.run)
        seen: set[State] = set()

        def watch() -> bool:
            seen.add(session.state)
            m = session.metrics()
            return m["disconnects"] >= 3 and m["reconnects"] >= 3 and State.DEGRADED in seen

        await sink.wait_for(watch, deadline=8, what="disconnects, a reboot and recoveries")
        mark = len(sink.readings)
        await sink.wait_for(
            lambda: any(r.quality is Quality.GOOD for r in sink.since(mark)), what="GOOD again"
        )
        tg.cancel_scope.cancel()


async def test_slow_replies_and_random_exceptions() -> None:
    sink = Collector()
    handle: list = []
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(run_modbus_tcp_simulator, tcp_sim(), handle=handle))
        faults = handle[0].faults
        session = tcp_adapter(port).build(ctx(sink))
        await tg.start(session.run)
        await sink.wait_for(lambda: len(sink.batches) >= 3)
        faults.slow_reply_s, faults.slow_probability = 0.5, 1.0  # slower than the 0.2 s budget
        await sink.wait_for(lambda: session.metrics()["timeouts"] >= 1, what="timeouts")
        await sink.wait_for(lambda: session.state is State.DEGRADED, what="DEGRADED")
        faults.slow_probability = 0.0
        await sink.wait_for(lambda: session.state is State.RUNNING, deadline=5, what="RUNNING")
        faults.exception_probability, faults.exception_code = 1.0, 4
        await sink.wait_for(lambda: session.metrics()["exceptions"] >= 2, what="exceptions")
        assert sink.latest("temp").quality is Quality.BAD
        assert session.state is State.RUNNING  # the device answers: not a connection problem
        faults.exception_probability = 0.0
        await sink.wait_for(lambda: sink.latest("temp").quality is Quality.GOOD, what="GOOD")
        tg.cancel_scope.cancel()


async def test_rtu_simulator_reports_its_client_path(tmp_path: Path) -> None:
    sink = Collector()
    link = tmp_path / "ttyDEMO0"
    cfg = msgspec.convert(
        {"devices": [{"unit_id": 5, "points": SIM_POINTS}], "update_interval": 0.02,
         "link": str(link)},
        ModbusRtuSimConfig,
    )
    async with anyio.create_task_group() as tg:
        path = await tg.start(run_modbus_rtu_simulator, cfg)
        assert path == str(link) and await anyio.Path(path).exists()
        adapter = msgspec.convert(
            {"type": "modbus_rtu", "id": "rtu", "port": path, "poll_interval": 0.05,
             "timeout": 0.3,
             "groups": [{"unit_id": 5, "asset_id": "line", "points": gateway_points()}]},
            ModbusRtuAdapter,
        )
        session = adapter.build(ctx(sink))
        await tg.start(session.run)
        await sink.wait_for(
            lambda: len({round(r.value) for r in sink.readings if r.parameter == "temp"}) >= 3,
            what="temp moving over RTU",
        )
        tg.cancel_scope.cancel()
    assert not link.is_symlink()  # removed on stop


async def test_rtu_reboot_silences_the_line_then_recovers() -> None:
    sink = Collector()
    cfg = msgspec.convert(
        {"devices": [{"unit_id": 5, "points": SIM_POINTS}], "update_interval": 0.02,
         "faults": {"reboot_every_s": 0.5, "reboot_down_s": 0.4}},
        ModbusRtuSimConfig,
    )
    async with anyio.create_task_group() as tg:
        path = await tg.start(run_modbus_rtu_simulator, cfg)
        adapter = msgspec.convert(
            {"type": "modbus_rtu", "id": "rtu", "port": path, "poll_interval": 0.05,
             "timeout": 0.1, "reconnect_min": 0.05, "reconnect_max": 0.1,
             "groups": [{"unit_id": 5, "asset_id": "line", "points": gateway_points()}]},
            ModbusRtuAdapter,
        )
        session = adapter.build(ctx(sink))
        await tg.start(session.run)
        await sink.wait_for(lambda: session.state is State.DEGRADED, what="silent line")
        assert sink.latest("temp").quality is Quality.BAD
        await sink.wait_for(lambda: session.state is State.RUNNING, what="line back")
        mark = len(sink.readings)
        await sink.wait_for(lambda: any(r.parameter == "temp" and r.quality is Quality.GOOD
                                        for r in sink.since(mark)), what="GOOD again")
        tg.cancel_scope.cancel()
