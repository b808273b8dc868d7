"""Modbus TCP session against pymodbus' real TCP server (simulator datastore)."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import pytest
from peers.modbus import Collector, modbus_server_fixture  # noqa: F401

from otgate.actors.context import BuildContext
from otgate.actors.messages import State
from otgate.actors.records import Classification, Quality
from otgate.protocols.modbus.config import Point, Table
from otgate.protocols.modbus.convert import encode_value
from otgate.protocols.modbus_tcp import ModbusTcpAdapter

pytestmark = pytest.mark.anyio


def make_adapter(port: int, groups: list[dict], **kw) -> ModbusTcpAdapter:
    raw = {
        "type": "modbus_tcp",
        "id": "plc1",
        "host": "127.0.0.1",
        "port": port,
        "poll_interval": 0.05,
        "timeout": 0.3,
        "reconnect_min": 0.05,
        "reconnect_max": 0.3,
        "groups": groups,
        **kw,
    }
    return msgspec.convert(raw, ModbusTcpAdapter)


def build(cfg: ModbusTcpAdapter, sink: Collector):
    return cfg.build(BuildContext(gateway_id="gw", publish=sink, state_dir=Path(".")))


TYPED_POINTS = [
    {"parameter": "i16", "address": 0, "type": "int16", "value": -1234},
    {"parameter": "u16", "address": 1, "type": "uint16", "value": 54321},
    {"parameter": "i32_cdab", "address": 2, "type": "int32", "word_order": "little",
     "value": -7654321},
    {"parameter": "u32_badc", "address": 4, "type": "uint32", "byte_order": "little",
     "value": 3_000_000_001},
    {"parameter": "i64_dcba", "address": 6, "type": "int64", "byte_order": "little",
     "word_order": "little", "value": -(2**40) - 5},
    {"parameter": "u64", "address": 10, "type": "uint64", "value": 2**63 + 17},
    {"parameter": "f32", "address": 14, "type": "float32", "value": 21.5},
    {"parameter": "f32_cdab", "address": 16, "type": "float32", "word_order": "little",
     "value": -0.125},
    {"parameter": "f64_dcba", "address": 18, "type": "float64", "byte_order": "little",
     "word_order": "little", "value": 6.02214076e23},
    {"parameter": "scaled", "address": 22, "type": "int16", "scale": 0.1, "offset": 100.0,
     "unit": "kPa", "value": 87.5},
    {"parameter": "name", "address": 23, "type": "string", "length": 5, "value": "PUMP-07"},
    {"parameter": "reg_bool", "address": 28, "type": "bool", "value": True},
]


async def test_every_type_and_order_from_known_registers(modbus_server) -> None:
    store = modbus_server.store
    points = []
    for spec in TYPED_POINTS:
        spec = dict(spec)
        value = spec.pop("value")
        p = msgspec.convert(spec, Point)
        regs = [1] if p.type.value == "bool" else encode_value(p, value)
        store.set_registers(1, Table.HOLDING, p.address, regs)
        points.append((spec, value))
    store.set_registers(1, Table.HOLDING, 29, [0b0000_0000_0010_0001])
    store.set_registers(1, Table.INPUT, 100, [777])
    store.set_bits(1, Table.COIL, 5, [True])
    store.set_bits(1, Table.DISCRETE, 7, [False, True])
    extra = [
        {"parameter": "bit0", "address": 29, "type": "bit", "bit": 0},
        {"parameter": "bit1", "address": 29, "type": "bit", "bit": 1},
        {"parameter": "bit5", "address": 29, "type": "bit", "bit": 5},
        {"parameter": "ir", "address": 100, "table": "input"},
        {"parameter": "coil5", "address": 5, "table": "coil", "type": "bool"},
        {"parameter": "di8", "address": 8, "table": "discrete", "type": "bool"},
    ]
    cfg = make_adapter(
        modbus_server.port,
        [{"unit_id": 1, "asset_id": "press", "points": [s for s, _ in points] + extra}],
    )
    sink = Collector()
    session = build(cfg, sink)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await sink.wait_for(lambda: len(sink.batches) >= 2, what="two polls")
        tg.cancel_scope.cancel()
    got = {r.parameter: r for r in sink.batches[1]}
    for spec, value in points:
        r = got[spec["parameter"]]
        assert r.quality is Quality.GOOD, spec
        if isinstance(value, float):
            assert r.value == pytest.approx(value, rel=1e-6), spec
        else:
            assert r.value == value, spec
    assert got["scaled"].unit == "kPa"
    assert (got["bit0"].value, got["bit1"].value, got["bit5"].value) == (True, False, True)
    assert got["ir"].value == 777
    assert got["coil5"].value is True and got["di8"].value is True
    r = got["f32"]
    assert r.asset_id == "press" and r.adapter_id == "plc1" and r.device_time is None
    assert r.adapter_version and r.gateway_time > 0
    seqs = [r.seq for r in sink.readings]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_batching_counts_requests_the_server_saw(modbus_server) -> None:
    # 40 contiguous float32 (80 regs), 3 coils, and two units: one read per
    # (unit, table) range, split only by max_registers_per_read.
    pts = [{"parameter": f"t{i}", "address": 2 * i, "type": "float32"} for i in range(40)]
    pts += [{"parameter": f"c{i}", "address": i, "table": "coil", "type": "bool"} for i in range(3)]
    groups = [
        {"unit_id": 1, "asset_id": "a", "points": pts},
        {"unit_id": 2, "asset_id": "b", "points": pts[:10]},
    ]
    cfg = make_adapter(modbus_server.port, groups, max_registers_per_read=50, poll_interval=10.0)
    sink = Collector()
    session = build(cfg, sink)
    store = modbus_server.store
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await sink.wait_for(lambda: len(sink.batches) >= 1, what="one poll")
        tg.cancel_scope.cancel()
    assert sorted(store.requests) == sorted([
        (1, 3, 0, 50), (1, 3, 50, 30), (1, 1, 0, 3), (2, 3, 0, 20)
    ])
    assert len(sink.batches[0]) == 40 + 3 + 10


async def test_exception_busy_nan_garbage_hit_only_their_points(modbus_server) -> None:
    store, faults = modbus_server.store, modbus_server.faults
    nan_point = {"parameter": "nan", "address": 0, "type": "float32"}
    ok_point = {"parameter": "ok", "address": 2, "type": "float32"}
    far_point = {"parameter": "far", "address": 500, "type": "uint16"}
    store.set_registers(1, Table.HOLDING, 0, [0x7FC0, 0])  # NaN
    store.set_registers(1, Table.HOLDING, 2, encode_value(msgspec.convert(ok_point, Point), 1.5))
    store.set_registers(1, Table.HOLDING, 500, [42])
    cfg = make_adapter(
        modbus_server.port,
        [{"unit_id": 1, "asset_id": "a", "points": [nan_point, ok_point, far_point]}],
        max_gap=4,
    )
    sink = Collector()
    session = build(cfg, sink)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await sink.wait_for(lambda: len(sink.batches) >= 2)
        last = {r.parameter: r for r in sink.batches[-1]}
        assert last["nan"].quality is Quality.BAD and last["nan"].value is None
        assert last["ok"].quality is Quality.GOOD and last["ok"].value == 1.5
        assert last["far"].value == 42

        # exception code 2 on the read at 500 only
        faults.exception_ranges[(1, 3)] = (500, 500, 2)
        n = len(sink.batches)
        await sink.wait_for(lambda: len(sink.batches) >= n + 2)
        last = {r.parameter: r for r in sink.batches[-1]}
        assert last["far"].quality is Quality.BAD
        assert last["ok"].quality is Quality.GOOD
        assert session.state is State.RUNNING
        faults.exception_ranges.clear()

        # server busy twice: retried, values stay GOOD
        retries = session.metrics()["busy_retries"]
        faults.busy_next = 2
        n = len(sink.batches)
        await sink.wait_for(lambda: len(sink.batches) >= n + 2)
        assert session.metrics()["busy_retries"] == retries + 2
        assert all(r.quality is Quality.GOOD for r in sink.batches[-1] if r.parameter != "nan")

        # one garbage frame: those points BAD, then everything flows again
        mark = len(sink.readings)
        faults.garbage_next = 1
        await sink.wait_for(
            lambda: any(r.quality is Quality.BAD and r.parameter != "nan"
                        for r in sink.since(mark)),
            what="BAD after garbage",
        )
        mark = len(sink.readings)
        await sink.wait_for(
            lambda: any(r.parameter == "far" and r.quality is Quality.GOOD
                        for r in sink.since(mark)),
            what="recovery after garbage",
        )
        tg.cancel_scope.cancel()


async def test_disconnect_and_server_restart_recover_without_restart(modbus_server) -> None:
    store = modbus_server.store
    store.set_registers(1, Table.HOLDING, 0, [11])
    cfg = make_adapter(
        modbus_server.port, [{"unit_id": 1, "asset_id": "a", "points": [
            {"parameter": "v", "address": 0}]}]
    )
    sink = Collector()
    session = build(cfg, sink)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await sink.wait_for(lambda: session.metrics()["connected"] == 1)
        # the peer drops the connection
        modbus_server.drop_connections()
        await sink.wait_for(lambda: session.metrics()["disconnects"] >= 1, what="disconnect seen")
        await sink.wait_for(lambda: session.metrics()["reconnects"] >= 1, what="reconnect")
        # the server goes away (reboot): DEGRADED, BAD published, then back
        await modbus_server.stop()
        await sink.wait_for(lambda: session.state is State.DEGRADED, what="DEGRADED")
        assert sink.latest("v").quality is Quality.BAD
        await anyio.sleep(0.3)  # stay down across several reconnect attempts
        store.set_registers(1, Table.HOLDING, 0, [22])
        await modbus_server.start_tcp("127.0.0.1", modbus_server.port)
        await sink.wait_for(
            lambda: session.state is State.RUNNING and sink.latest("v").value == 22,
            what="recovery after restart",
        )
        assert session.metrics()["reconnects"] >= 2
        tg.cancel_scope.cancel()


async def test_dead_unit_does_not_stop_its_sibling(modbus_server) -> None:
    modbus_server.store.set_registers(1, Table.HOLDING, 0, [5])
    modbus_server.faults.dead_units.add(2)
    groups = [
        {"unit_id": 1, "asset_id": "a", "points": [{"parameter": "v", "address": 0}]},
        {"unit_id": 2, "asset_id": "b", "points": [{"parameter": "v", "address": 0}]},
    ]
    cfg = make_adapter(modbus_server.port, groups, timeout=0.2)
    sink = Collector()
    session = build(cfg, sink)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await sink.wait_for(lambda: session.state is State.DEGRADED, what="DEGRADED")
        mark = len(sink.readings)
        await sink.wait_for(
            lambda: sum(1 for r in sink.since(mark) if r.asset_id == "a") >= 5,
            what="unit 1 keeps flowing",
        )
        assert sink.latest("v", "b").quality is Quality.BAD
        modbus_server.faults.dead_units.clear()
        await sink.wait_for(
            lambda: session.state is State.RUNNING
            and sink.latest("v", "b").quality is Quality.GOOD,
            deadline=5,
            what="unit 2 recovers",
        )
        tg.cancel_scope.cancel()


async def test_event_and_alarm_points_emit_on_change(modbus_server) -> None:
    store = modbus_server.store
    store.set_registers(1, Table.HOLDING, 0, [1, 0])
    pts = [
        {"parameter": "run_state", "address": 0, "classification": "EVENT"},
        {"parameter": "overtemp", "address": 1, "type": "bit", "bit": 0,
         "classification": "ALARM"},
        {"parameter": "temp", "address": 2},
    ]
    cfg = make_adapter(modbus_server.port, [{"unit_id": 1, "asset_id": "m", "points": pts}])
    sink = Collector()
    session = build(cfg, sink)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await sink.wait_for(lambda: len(sink.batches) >= 5)
        store.set_registers(1, Table.HOLDING, 0, [2, 1])
        await sink.wait_for(lambda: sink.latest("overtemp").value is True)
        n = len(sink.batches)
        await sink.wait_for(lambda: len(sink.batches) >= n + 5)
        tg.cancel_scope.cancel()
    events = [r for r in sink.readings if r.parameter == "run_state"]
    alarms = [r for r in sink.readings if r.parameter == "overtemp"]
    assert [r.value for r in events] == [1, 2]
    assert [r.value for r in alarms] == [False, True]
    assert events[0].classification is Classification.EVENT
    assert alarms[0].classification is Classification.ALARM
    assert sum(1 for r in sink.readings if r.parameter == "temp") == len(sink.batches)


async def test_gateway_target_unreachable_puts_only_that_unit_on_probation(
    modbus_server,
) -> None:
    """Exception 11 from a TCP gateway: unit 2 on probation, unit 1 flows, socket kept."""
    modbus_server.store.set_registers(1, Table.HOLDING, 0, [5])
    modbus_server.faults.exception_ranges[(2, 3)] = (0, 65535, 11)
    groups = [
        {"unit_id": 1, "asset_id": "a", "points": [{"parameter": "v", "address": 0}]},
        {"unit_id": 2, "asset_id": "b", "points": [{"parameter": "v", "address": 0}]},
    ]
    cfg = make_adapter(modbus_server.port, groups, reconnect_min=0.5, reconnect_max=1.0)
    sink = Collector()
    session = build(cfg, sink)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await sink.wait_for(lambda: session.state is State.DEGRADED, what="DEGRADED")
        await sink.wait_for(lambda: sum(1 for r in sink.readings if r.asset_id == "a") >= 5)
        assert sink.latest("v", "b").quality is Quality.BAD
        asked = modbus_server.store.count(unit=2)
        assert asked <= 2  # probation: unit 2 is not asked every poll
        assert session.metrics()["disconnects"] == 0
        modbus_server.faults.exception_ranges.clear()
        await sink.wait_for(lambda: session.state is State.RUNNING, deadline=5, what="RUNNING")
        tg.cancel_scope.cancel()


async def test_every_numeric_type_in_all_four_orders(modbus_server) -> None:
    """8 numeric types x ABCD/CDAB/BADC/DCBA, laid out in the server, read back."""
    samples = {
        "int16": -12345, "uint16": 54321, "int32": -123456789, "uint32": 4_000_000_001,
        "int64": -(2**50) - 7, "uint64": 2**63 + 99, "float32": -3.5, "float64": 1.0e-300,
    }
    orders = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]
    store, specs, address = modbus_server.store, [], 0
    for typ, value in samples.items():
        for bo, wo in orders:
            spec = {"parameter": f"{typ}_{bo}_{wo}", "address": address, "type": typ,
                    "byte_order": bo, "word_order": wo}
            p = msgspec.convert(spec, Point)
            store.set_registers(1, Table.HOLDING, address, encode_value(p, value))
            specs.append((spec, value))
            address += p.width
    cfg = make_adapter(modbus_server.port,
                       [{"unit_id": 1, "asset_id": "x", "points": [s for s, _ in specs]}],
                       poll_interval=10.0)
    sink = Collector()
    session = build(cfg, sink)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await sink.wait_for(lambda: len(sink.batches) >= 1)
        tg.cancel_scope.cancel()
    got = {r.parameter: r.value for r in sink.batches[0]}
    for spec, value in specs:
        assert got[spec["parameter"]] == value, spec
    assert len(modbus_server.store.requests) == -(-address // 125)  # fewest reads
