"""Modbus RTU session against pymodbus' real serial server over a pty pair."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import anyio
import msgspec
import pytest
from peers.modbus import Collector, modbus_rtu_server_fixture  # noqa: F401

from otgate.actors.context import BuildContext
from otgate.actors.messages import State
from otgate.actors.records import Quality
from otgate.protocols.modbus.config import Point, Table
from otgate.protocols.modbus.convert import encode_value
from otgate.protocols.modbus_rtu import ModbusRtuAdapter

pytestmark = pytest.mark.anyio


def make_adapter(path: str, groups: list[dict], **kw) -> ModbusRtuAdapter:
    raw = {
        "type": "modbus_rtu",
        "id": "line1",
        "port": path,
        "baudrate": 19200,
        "poll_interval": 0.05,
        "timeout": 0.5,
        "reconnect_min": 0.05,
        "reconnect_max": 0.3,
        "groups": groups,
        **kw,
    }
    return msgspec.convert(raw, ModbusRtuAdapter)


def build(cfg: ModbusRtuAdapter, sink: Collector):
    return cfg.build(BuildContext(gateway_id="gw", publish=sink, state_dir=Path(".")))


async def test_rtu_reads_types_and_batches(modbus_rtu_server) -> None:
    store = modbus_rtu_server.store
    f = msgspec.convert({"parameter": "f", "address": 10, "type": "float32",
                         "word_order": "little"}, Point)
    store.set_registers(1, Table.HOLDING, 10, encode_value(f, 3.25))
    store.set_registers(1, Table.HOLDING, 12, [0xFFFF])
    store.set_registers(2, Table.INPUT, 0, [7, 8, 9])
    store.set_bits(2, Table.COIL, 4, [True])
    groups = [
        {"unit_id": 1, "asset_id": "pump", "points": [
            {"parameter": "f", "address": 10, "type": "float32", "word_order": "little"},
            {"parameter": "i", "address": 12, "type": "int16"},
        ]},
        {"unit_id": 2, "asset_id": "fan", "points": [
            {"parameter": f"ir{i}", "address": i, "table": "input"} for i in range(3)
        ] + [{"parameter": "coil", "address": 4, "table": "coil", "type": "bool"}]},
    ]
    cfg = make_adapter(modbus_rtu_server.path, groups, poll_interval=10.0, request_gap=0.003)
    sink = Collector()
    session = build(cfg, sink)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await sink.wait_for(lambda: len(sink.batches) >= 1, what="one poll")
        tg.cancel_scope.cancel()
    got = {(r.asset_id, r.parameter): r.value for r in sink.batches[0]}
    assert got == {
        ("pump", "f"): 3.25, ("pump", "i"): -1,
        ("fan", "ir0"): 7, ("fan", "ir1"): 8, ("fan", "ir2"): 9, ("fan", "coil"): True,
    }
    assert sorted(store.requests) == [(1, 3, 10, 3), (2, 1, 4, 1), (2, 4, 0, 3)]


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_dead_unit_does_not_stall_the_line(modbus_rtu_server) -> None:
    """Unit 3 never answers; units 1 and 2 keep (nearly) their poll rate.

    Measured: the live units' reading rate with the dead unit present, against
    the rate the same line reaches with all units alive; and the longest gap
    between two polls of unit 1, which the dead unit's own timeout budget
    (0.15 s, while the line default is 1 s) must bound.
    """
    store, faults = modbus_rtu_server.store, modbus_rtu_server.faults
    for unit in (1, 2, 3):
        store.set_registers(unit, Table.HOLDING, 0, [unit])
    groups = [
        {"unit_id": u, "asset_id": f"u{u}", "points": [{"parameter": "v", "address": 0}],
         **({"timeout": 0.15} if u == 3 else {})}
        for u in (1, 2, 3)
    ]
    interval, window = 0.05, 2.0
    cfg = make_adapter(modbus_rtu_server.path, groups, poll_interval=interval, timeout=1.0,
                       reconnect_min=0.5, reconnect_max=2.0)
    sink = Collector()
    session = build(cfg, sink)
    stamps: dict[str, list[float]] = {"u1": [], "u2": [], "u3": []}

    async def publish(readings: list) -> None:
        now = time.monotonic()
        for r in readings:
            if r.quality is Quality.GOOD:
                stamps[r.asset_id].append(now)
        await sink(readings)

    session.publish = publish

    async def rate(asset: str) -> float:
        start = len(stamps[asset])
        await anyio.sleep(window)
        return (len(stamps[asset]) - start) / window

    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await sink.wait_for(lambda: len(stamps["u3"]) >= 3, what="all units answer")
        healthy_rate = await rate("u1")
        faults.dead_units.add(3)
        await sink.wait_for(lambda: session.state is State.DEGRADED, what="DEGRADED")
        mark = len(stamps["u1"])
        dead_rate = await rate("u1")
        gaps = _gaps(stamps["u1"][mark:])
        u2_rate = await rate("u2")
        assert sink.latest("v", "u3").quality is Quality.BAD
        faults.dead_units.clear()
        await sink.wait_for(lambda: session.state is State.RUNNING, deadline=5,
                            what="unit 3 back")
        tg.cancel_scope.cancel()
    print(f"u1 rate healthy={healthy_rate:.1f}/s with dead unit={dead_rate:.1f}/s "
          f"u2={u2_rate:.1f}/s max gap={max(gaps) * 1000:.0f} ms")
    assert dead_rate >= 0.75 * healthy_rate
    assert u2_rate >= 0.75 * healthy_rate
    assert max(gaps) < 0.15 + interval + 0.1  # bounded by the dead unit's own budget
    assert session.metrics()["timeouts"] >= 1


async def test_garbage_frame_on_the_line_marks_bad_then_recovers(modbus_rtu_server) -> None:
    store, faults = modbus_rtu_server.store, modbus_rtu_server.faults
    store.set_registers(1, Table.HOLDING, 0, [41])
    store.set_registers(2, Table.HOLDING, 0, [42])
    groups = [
        {"unit_id": u, "asset_id": f"u{u}", "points": [{"parameter": "v", "address": 0}]}
        for u in (1, 2)
    ]
    cfg = make_adapter(modbus_rtu_server.path, groups, timeout=0.2)
    sink = Collector()
    session = build(cfg, sink)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await sink.wait_for(lambda: len(sink.batches) >= 2)
        mark = len(sink.readings)
        faults.garbage_next = 1  # the next reply's CRC is broken on the wire
        await sink.wait_for(
            lambda: any(r.quality is Quality.BAD for r in sink.since(mark)), what="BAD"
        )
        bad = [r for r in sink.since(mark) if r.quality is Quality.BAD]
        assert len({r.asset_id for r in bad}) == 1  # only the unit whose frame broke
        await sink.wait_for(
            lambda: sink.latest("v", "u1").value == 41 and sink.latest("v", "u2").value == 42,
            what="recovery",
        )
        tg.cancel_scope.cancel()


async def test_missing_serial_port_is_degraded_not_fatal(tmp_path: Path) -> None:
    cfg = make_adapter(str(tmp_path / "ttyUSB9"), [
        {"unit_id": 1, "asset_id": "a", "points": [{"parameter": "v", "address": 0}]}
    ])
    sink = Collector()
    session = build(cfg, sink)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await sink.wait_for(lambda: session.state is State.DEGRADED, what="DEGRADED")
        assert sink.latest("v").quality is Quality.BAD
        await anyio.sleep(0.3)  # several reconnect attempts: still alive, BAD published once
        assert session.state is State.DEGRADED
        assert sum(1 for r in sink.readings if r.parameter == "v") == 1
        tg.cancel_scope.cancel()
