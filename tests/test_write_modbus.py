"""Modbus writes through the device session against pymodbus' real servers
(TCP, and RTU over the pty pair): requests on a real embedded log, results
read back from it, the simulator's tables and write log checked."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import msgspec
import pytest
from commands_log import CommandLog
from peers.modbus import Collector, modbus_rtu_server_fixture, modbus_server_fixture  # noqa: F401

from otgate.actors.records import CommandStatus, Quality
from otgate.protocols.modbus.config import Point, Table
from otgate.protocols.modbus.convert import encode_value
from otgate.protocols.modbus_rtu import ModbusRtuAdapter
from otgate.protocols.modbus_tcp import ModbusTcpAdapter

pytestmark = pytest.mark.anyio
W = {"writable": True}

ORDERS = [(b, w) for b in ("big", "little") for w in ("big", "little")]
TYPED_VALUES = {
    "int16": -1234, "uint16": 54321, "int32": -7654321, "uint32": 3_000_000_001,
    "int64": -(2**40) - 5, "uint64": 2**62 + 17,  # Avro longs: uint64 above 2**63 cannot travel
    "float32": 21.3, "float64": 6.02214076e23, "string": "PUMP-07",
}
WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4,
         "uint64": 4, "float64": 4, "string": 4}
MAX_PER_WRITE = 2


def _writable() -> list[tuple[dict, object, int]]:
    """(point config, value written, frames the device receives): every register
    type in every byte/word order, booleans, bits, coils and the function modes."""
    out: list[tuple[dict, object, int]] = []
    address = 0
    for t, value in TYPED_VALUES.items():
        for byte_order, word_order in ORDERS:
            if WIDTH[t] == 1 and word_order == "little":
                continue  # one register has no word order
            cfg = {"parameter": f"{t}_{byte_order[0]}{word_order[0]}", "address": address,
                   "type": t, "byte_order": byte_order, "word_order": word_order}
            if t == "string":
                cfg["length"] = WIDTH[t]
            out.append((cfg, value, -(-WIDTH[t] // MAX_PER_WRITE)))
            address += WIDTH[t]
    out += [
        ({"parameter": "u16_multi", "address": address, "type": "uint16",
          "write": {"mode": "multiple"}}, 4321, 1),
        ({"parameter": "scaled", "address": address + 1, "type": "int16", "scale": 0.1,
          "offset": 100.0}, 87.5, 1),
        ({"parameter": "reg_bool", "address": address + 2, "type": "bool"}, True, 1),
        ({"parameter": "reg_bool_le", "address": address + 3, "type": "bool",
          "byte_order": "little"}, True, 1),
        ({"parameter": "bit3", "address": address + 4, "type": "bit", "bit": 3}, True, 1),
        ({"parameter": "bit3_le", "address": address + 5, "type": "bit", "bit": 3,
          "byte_order": "little"}, True, 1),
        ({"parameter": "coil", "address": 5, "table": "coil", "type": "bool"}, True, 1),
        ({"parameter": "coil_multi", "address": 6, "table": "coil", "type": "bool",
          "write": {"mode": "multiple"}}, True, 1),
    ]
    return out


WRITABLE = _writable()


def tcp_adapter(port: int, points: list[dict], **kw) -> ModbusTcpAdapter:
    raw = {
        "type": "modbus_tcp", "id": "plc1", "host": "127.0.0.1", "port": port,
        "poll_interval": 0.05, "timeout": 0.5, "reconnect_min": 0.05, "reconnect_max": 0.3,
        "max_registers_per_write": MAX_PER_WRITE,
        "groups": [{"unit_id": 1, "asset_id": "press", "points": points}], **kw,
    }
    return msgspec.convert(raw, ModbusTcpAdapter)


def point(cfg: dict) -> Point:
    return msgspec.convert({**cfg, **W}, Point)


async def _round_trips(cl: CommandLog, sim, adapter_id: str, unit: int) -> None:
    store = sim.store
    for cfg, value, frames in WRITABLE:
        p = point(cfg)
        before = len(store.writes)
        rid = await cl.request(adapter_id, "press", p.parameter, value)
        res = await cl.final(rid)
        assert res.status is CommandStatus.WRITTEN, (p.parameter, res)
        sent = list(store.writes)[before:]
        assert len(sent) == frames, (p.parameter, sent)
        if p.table is Table.COIL:
            assert store.tables[unit][Table.COIL][p.address] == 1
            assert res.read_back is True
        elif p.type.value == "bit":
            reg = store.tables[unit][Table.HOLDING][p.address]
            assert reg == (1 << 3 if p.byte_order.value == "big" else 1 << 11), p.parameter
            assert res.read_back is True
        else:
            regs = store.tables[unit][Table.HOLDING][p.address : p.address + p.width].tolist()
            assert regs == encode_value(p, value), p.parameter
            if isinstance(value, float) and p.type.value == "float32":
                assert res.read_back == pytest.approx(value, rel=1e-6)
            else:
                assert res.read_back == value, p.parameter


async def test_tcp_every_writable_type_round_trips(modbus_server, tmp_path: Path) -> None:
    cfg = tcp_adapter(modbus_server.port, [{**c, **W} for c, _, _ in WRITABLE])
    async with CommandLog(tmp_path) as cl:
        session = cfg.build(cl.context(Collector()))
        cl.nudge = session
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            await _round_trips(cl, modbus_server, "plc1", 1)
            tg.cancel_scope.cancel()
    assert session.metrics()["writes_written"] == len(WRITABLE)


async def test_rtu_every_writable_type_round_trips(modbus_rtu_server, tmp_path: Path) -> None:
    raw = {
        "type": "modbus_rtu", "id": "line1", "port": modbus_rtu_server.path, "baudrate": 19200,
        "poll_interval": 0.05, "timeout": 0.5, "reconnect_min": 0.05, "reconnect_max": 0.3,
        "max_registers_per_write": MAX_PER_WRITE,
        "groups": [{"unit_id": 2, "asset_id": "press",
                    "points": [{**c, **W} for c, _, _ in WRITABLE]}],
    }
    cfg = msgspec.convert(raw, ModbusRtuAdapter)
    async with CommandLog(tmp_path) as cl:
        session = cfg.build(cl.context(Collector()))
        cl.nudge = session
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            await _round_trips(cl, modbus_rtu_server, "line1", 2)
            tg.cancel_scope.cancel()


async def test_refusals_give_their_result_and_write_nothing(
    modbus_server, tmp_path: Path
) -> None:
    store = modbus_server.store
    store.set_registers(1, Table.HOLDING, 40, [7, 7, 7])
    points = [
        {"parameter": "sp", "address": 40, "type": "int16", **W,
         "write": {"min": 0, "max": 100}},
        {"parameter": "guarded", "address": 41, "type": "int16", **W},  # engineer by default
        {"parameter": "mode", "address": 42, **W, "write": {"allowed": [1, 2], "role": "operator"}},
        {"parameter": "ro", "address": 43},
    ]
    # the device refuses function 6 on register 41 with exception 4 (device failure)
    store.faults.exception_ranges[(1, 6)] = (41, 41, 4)
    cfg = tcp_adapter(modbus_server.port, points)
    sink = Collector()
    async with CommandLog(tmp_path) as cl:
        session = cfg.build(cl.context(sink))
        cl.nudge = session
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            cases = [
                (("sp", 150), {}, CommandStatus.REJECTED, None, "above max 100"),
                (("sp", 12.5), {}, CommandStatus.REJECTED, None, "not a whole step"),
                (("guarded", 5), {"role": "operator"}, CommandStatus.REJECTED, None,
                 "needs engineer"),
                (("guarded", 5), {}, CommandStatus.REJECTED, 4, "exception 4"),
                (("mode", 3), {"role": "operator"}, CommandStatus.REJECTED, None, "not in allowed"),
                (("ro", 1), {}, CommandStatus.REJECTED, None, "not a writable point"),
                (("sp", 50), {"deadline_s": -1.0}, CommandStatus.EXPIRED, None, "deadline"),
            ]
            for (param, value), kw, status, code, text in cases:
                rid = await cl.request("plc1", "press", param, value, **kw)
                res = await cl.final(rid)
                assert (res.status, res.code) == (status, code), (param, value, res)
                assert text in res.detail, res.detail
            assert store.tables[1][Table.HOLDING][40:43].tolist() == [7, 7, 7]
            assert list(store.writes) == []
            # the session is unharmed: a valid write still goes through, reads continue
            rid = await cl.request("plc1", "press", "mode", 2, role="operator")
            assert (await cl.final(rid)).status is CommandStatus.WRITTEN
            mark = len(sink.readings)
            await sink.wait_for(lambda: len(sink.since(mark)) > 8, what="more readings")
            tg.cancel_scope.cancel()
    assert all(r.quality is Quality.GOOD for r in sink.readings)


async def test_a_refused_second_request_of_a_wide_value_is_a_partial_write(
    modbus_server, tmp_path: Path
) -> None:
    store = modbus_server.store
    store.faults.exception_ranges[(1, 16)] = (72, 73, 2)  # the value's low half is refused
    cfg = tcp_adapter(modbus_server.port, [{"parameter": "wide", "address": 70,
                                            "type": "int64", **W}])
    async with CommandLog(tmp_path) as cl:
        session = cfg.build(cl.context(Collector()))
        cl.nudge = session
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            res = await cl.final(await cl.request("plc1", "press", "wide", 2**40 + 7))
            tg.cancel_scope.cancel()
    assert (res.status, res.code) == (CommandStatus.MISMATCH, 2)
    assert "partly written" in res.detail and "request 2 of 2" in res.detail
    assert [(w[1], w[2]) for w in store.writes] == [(16, 70)]


async def test_a_record_that_is_no_request_is_skipped(modbus_server, tmp_path: Path) -> None:
    cfg = tcp_adapter(modbus_server.port, [{"parameter": "sp", "address": 0, **W}])
    async with CommandLog(tmp_path) as cl:
        session = cfg.build(cl.context(Collector()))
        cl.nudge = session
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            await cl.log.append("commands.requests", [(b"plc1", b"not avro")])
            rid = await cl.request("plc1", "press", "sp", 5)
            assert (await cl.final(rid)).status is CommandStatus.WRITTEN
            tg.cancel_scope.cancel()


async def test_device_down_expires_at_the_deadline(tmp_path: Path) -> None:
    from peers.opcua import free_port

    cfg = tcp_adapter(free_port(), [{"parameter": "sp", "address": 0, **W}])
    async with CommandLog(tmp_path) as cl:
        session = cfg.build(cl.context(Collector()))
        cl.nudge = session
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            rid = await cl.request("plc1", "press", "sp", 5, deadline_s=0.5)
            res = await cl.final(rid)
            tg.cancel_scope.cancel()
    assert res.status is CommandStatus.EXPIRED
    assert "device not reachable" in res.detail


async def test_a_unit_that_stopped_answering_expires_and_the_others_write(
    modbus_server, tmp_path: Path
) -> None:
    raw = {
        "type": "modbus_tcp", "id": "plc1", "host": "127.0.0.1", "port": modbus_server.port,
        "poll_interval": 0.05, "timeout": 0.3, "reconnect_min": 0.5, "reconnect_max": 1.0,
        "groups": [
            {"unit_id": 1, "asset_id": "press", "points": [{"parameter": "sp", "address": 0, **W}]},
            {"unit_id": 2, "asset_id": "oven", "points": [{"parameter": "sp", "address": 0, **W}]},
        ],
    }
    cfg = msgspec.convert(raw, ModbusTcpAdapter)
    modbus_server.store.faults.dead_units.add(2)
    async with CommandLog(tmp_path) as cl:
        session = cfg.build(cl.context(Collector()))
        cl.nudge = session
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            await Collector().wait_for(lambda: 2 in session.probation, what="unit 2 on probation")
            dead = await cl.request("plc1", "oven", "sp", 5, deadline_s=0.3)
            res = await cl.final(dead)
            assert res.status is CommandStatus.EXPIRED and "not reachable" in res.detail
            alive = await cl.request("plc1", "press", "sp", 6)
            assert (await cl.final(alive)).status is CommandStatus.WRITTEN
            tg.cancel_scope.cancel()
    assert [w[0] for w in modbus_server.store.writes] == [1]


async def test_reads_keep_flowing_during_writes(modbus_server, tmp_path: Path) -> None:
    points = [{"parameter": f"r{i}", "address": i} for i in range(10)]
    points.append({"parameter": "sp", "address": 50, **W})
    cfg = tcp_adapter(modbus_server.port, points, poll_interval=0.01)
    sink = Collector()
    async with CommandLog(tmp_path) as cl:
        session = cfg.build(cl.context(sink))
        cl.nudge = session
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            await sink.wait_for(lambda: session.counters["polls"] > 5, what="polling")
            polls = session.counters["polls"]
            for v in range(30):
                rid = await cl.request("plc1", "press", "sp", v)
                assert (await cl.final(rid)).status is CommandStatus.WRITTEN
            assert session.counters["polls"] - polls >= 10  # polls went on between writes
            tg.cancel_scope.cancel()
    assert modbus_server.store.tables[1][Table.HOLDING][50] == 29


async def test_a_restart_mid_write_reports_and_never_writes_twice(
    modbus_server, tmp_path: Path
) -> None:
    store = modbus_server.store
    cfg = tcp_adapter(modbus_server.port, [{"parameter": "sp", "address": 60, **W}],
                      timeout=3.0)
    async with CommandLog(tmp_path) as cl:
        first = cfg.build(cl.context(Collector()))
        async with anyio.create_task_group() as tg:
            await tg.start(first.run)
            await Collector().wait_for(lambda: first.counters["polls"] > 0, what="first poll")
            # the device applies the write, then takes 2 s to answer: the session dies first
            store.faults.slow_reply_s, store.faults.slow_probability = 2.0, 1.0
            rid = await cl.request("plc1", "press", "sp", 42, deadline_s=30)
            await Collector().wait_for(
                lambda: len(store.writes) == 1, deadline=10, what="the write"
            )
            # a write still running after ACCEPTED_AFTER_S says so on the results topic
            with anyio.fail_after(5):
                while not await cl.results(rid):
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()  # like a kill: no result, the in-flight note stays
        assert [r.status for r in await cl.results(rid)] == [CommandStatus.ACCEPTED]
        store.faults.slow_probability = 0.0
        second = cfg.build(cl.context(Collector()))
        async with anyio.create_task_group() as tg:
            await tg.start(second.run)
            res = await cl.final(rid)
            rid2 = await cl.request("plc1", "press", "sp", 43)
            assert (await cl.final(rid2)).status is CommandStatus.WRITTEN
            tg.cancel_scope.cancel()
    assert res.status is CommandStatus.TIMED_OUT and "not retried" in res.detail
    assert [w[3] for w in store.writes] == [[42], [43]]  # 42 went out once


async def test_the_device_is_written_only_once_the_ledger_entry_is_on_disk(
    modbus_server, tmp_path: Path
) -> None:
    """The ledger entry is written in a thread while the write goes on; a slow
    fsync must still come before the write frame (at most once across a crash)."""
    store = modbus_server.store
    cfg = tcp_adapter(modbus_server.port, [{"parameter": "sp", "address": 70, **W}])
    seen: list[int] = []  # device writes served when each "taken" entry became durable
    async with CommandLog(tmp_path) as cl:
        session = cfg.build(cl.context(Collector()))
        cl.nudge = session
        ledger = session.commands.ledger
        durable_write = ledger.write

        def slow_write(*args, done: bool, **kw) -> None:
            if not done:
                time.sleep(0.3)  # a slow disk: the bus is long free by now
                seen.append(len(store.writes))
            durable_write(*args, done=done, **kw)

        ledger.write = slow_write
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            for v in (1, 2):
                rid = await cl.request("plc1", "press", "sp", v)
                assert (await cl.final(rid)).status is CommandStatus.WRITTEN
            tg.cancel_scope.cancel()
    assert seen == [0, 1]
    assert [w[3] for w in store.writes] == [[1], [2]]
