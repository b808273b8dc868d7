"""OPC UA writes through the device session against a real asyncua server:
every scalar DataType round-trips, the server's refusals (read-only node)
come back with their status code, bad values never reach the server."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import pytest
from asyncua import ua
from commands_log import CommandLog
from peers.modbus import Collector
from peers.opcua import OpcUaPeer

from otgate.actors.records import CommandStatus
from otgate.protocols.opcua import OpcUaSource

pytestmark = pytest.mark.anyio
VT = ua.VariantType

# variable -> (initial variant, value written, value the server then holds)
TYPED = {
    "B": (ua.Variant(False, VT.Boolean), True, True),
    "I8": (ua.Variant(0, VT.SByte), -100, -100),
    "U8": (ua.Variant(0, VT.Byte), 200, 200),
    "I16": (ua.Variant(0, VT.Int16), -30000, -30000),
    "U16": (ua.Variant(0, VT.UInt16), 60000, 60000),
    "I32": (ua.Variant(0, VT.Int32), -2_000_000_000, -2_000_000_000),
    "U32": (ua.Variant(0, VT.UInt32), 4_000_000_000, 4_000_000_000),
    "I64": (ua.Variant(0, VT.Int64), -(2**62), -(2**62)),
    "U64": (ua.Variant(0, VT.UInt64), 2**62 + 1, 2**62 + 1),
    "F": (ua.Variant(0.0, VT.Float), 21.3, pytest.approx(21.3, rel=1e-6)),
    "D": (ua.Variant(0.0, VT.Double), 6.02214076e23, 6.02214076e23),
    "S": (ua.Variant("", VT.String), "batch-42", "batch-42"),
    "Temp": (ua.Variant(20.0, VT.Double), None, None),  # read-only below, and read
}


@pytest.fixture
async def peer():
    p = OpcUaPeer(variables={name: v for name, (v, _, _) in TYPED.items()})
    await p.start()
    await p.nodes["Temp"].set_read_only()
    try:
        yield p
    finally:
        await p.stop()


def source(peer: OpcUaPeer, limits: dict | None = None) -> OpcUaSource:
    points = [
        {"node_id": peer.node_id(name), "asset_id": "reactor", "parameter": name.lower(),
         "writable": True, **({"write": limits[name]} if limits and name in limits else {})}
        for name in TYPED
    ]
    raw = {"type": "opcua", "id": "ua1", "endpoint": peer.url, "points": points,
           "mode": "subscription", "publishing_interval_ms": 50, "sampling_interval_ms": 0,
           "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
    return msgspec.convert(raw, OpcUaSource)


async def test_every_data_type_round_trips(peer: OpcUaPeer, tmp_path: Path) -> None:
    async with CommandLog(tmp_path) as cl:
        session = source(peer).build(cl.context(Collector()))
        cl.nudge = session
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            for name, (_, value, held) in TYPED.items():
                if value is None:
                    continue
                rid = await cl.request("ua1", "reactor", name.lower(), value)
                res = await cl.final(rid)
                assert res.status is CommandStatus.WRITTEN, (name, res)
                assert await peer.nodes[name].read_value() == held, name
                assert res.read_back == held, name
                assert await peer.nodes[name].read_data_type_as_variant_type() is TYPED[name][0].VariantType
            tg.cancel_scope.cancel()


async def test_refusals_come_back_and_change_nothing(peer: OpcUaPeer, tmp_path: Path) -> None:
    sink = Collector()
    async with CommandLog(tmp_path) as cl:
        cfg = source(peer, {"D": {"min": 0.0, "max": 10.0}, "I16": {"role": "admin"}})
        session = cfg.build(cl.context(sink))
        cl.nudge = session
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            cases = [
                # asyncua answers a read-only node's Write with BadUserAccessDenied
                ("temp", 25.0, {}, ua.StatusCodes.BadUserAccessDenied, "BadUserAccessDenied"),
                ("i16", 1, {}, None, "needs admin"),
                ("i16", 40000, {"role": "admin"}, None, "out of range for Int16"),
                ("u8", -1, {}, None, "out of range for Byte"),
                ("i32", 1.5, {}, None, "whole number"),
                ("d", 11.0, {}, None, "above max 10"),
                ("s", 5, {}, None, "the node is String"),
                ("b", "yes", {}, None, "the node is Boolean"),
            ]
            for param, value, kw, code, text in cases:
                rid = await cl.request("ua1", "reactor", param, value, **kw)
                res = await cl.final(rid)
                assert (res.status, res.code) == (CommandStatus.REJECTED, code), (param, res)
                assert text in res.detail, (param, res.detail)
            for name, (initial, _, _) in TYPED.items():
                assert await peer.nodes[name].read_value() == initial.Value, name
            # reads keep flowing, and the session still writes
            await peer.write("Temp", 31.5)
            await sink.wait_for(
                lambda: (r := sink.latest("temp")) is not None and r.value == 31.5,
                what="the new temperature",
            )
            rid = await cl.request("ua1", "reactor", "d", 9.5)
            assert (await cl.final(rid)).status is CommandStatus.WRITTEN
            tg.cancel_scope.cancel()


async def test_server_down_expires_and_writes_after_it_is_back(
    peer: OpcUaPeer, tmp_path: Path
) -> None:
    async with CommandLog(tmp_path) as cl:
        session = source(peer).build(cl.context(Collector()))
        cl.nudge = session
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            await Collector().wait_for(lambda: session.client is not None, what="connected")
            await peer.stop()
            await Collector().wait_for(lambda: session.client is None, what="disconnect")
            rid = await cl.request("ua1", "reactor", "d", 1.0, deadline_s=0.5)
            res = await cl.final(rid)
            assert res.status is CommandStatus.EXPIRED and "not reachable" in res.detail
            await peer.start()
            rid = await cl.request("ua1", "reactor", "d", 2.0, deadline_s=20)
            assert (await cl.final(rid, timeout=20)).status is CommandStatus.WRITTEN
            assert await peer.nodes["D"].read_value() == 2.0
            tg.cancel_scope.cancel()
