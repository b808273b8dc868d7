"""Unit tests: Modbus point config, request planning and type conversion."""

from __future__ import annotations

import math
import struct

import msgspec
import pytest

from otgate.protocols.modbus.config import Point, PointGroup, PollSettings, Table
from otgate.protocols.modbus.convert import encode_value, register_decoder, registers_to_bytes
from otgate.protocols.modbus.planning import plan_reads
from otgate.protocols.modbus_tcp import ModbusTcpAdapter


def point(**kw) -> Point:
    kw.setdefault("parameter", "p")
    return msgspec.convert(kw, Point)


def adapter(points: list[dict], **kw) -> ModbusTcpAdapter:
    raw = {"type": "modbus_tcp", "id": "dev", "host": "127.0.0.1", **kw}
    raw["groups"] = [{"unit_id": 1, "asset_id": "a", "points": points}]
    return msgspec.convert(raw, ModbusTcpAdapter)


# -- conversion -----------------------------------------------------------------

# 0x41200000 = 10.0 as float32 ("ABCD" = 0x4120 0x0000)
@pytest.mark.parametrize(
    ("byte_order", "word_order", "regs"),
    [
        ("big", "big", [0x4120, 0x0000]),  # ABCD
        ("big", "little", [0x0000, 0x4120]),  # CDAB
        ("little", "big", [0x2041, 0x0000]),  # BADC
        ("little", "little", [0x0000, 0x2041]),  # DCBA
    ],
)
def test_float32_byte_and_word_orders(byte_order: str, word_order: str, regs: list[int]) -> None:
    p = point(address=0, type="float32", byte_order=byte_order, word_order=word_order)
    assert register_decoder(p, 0)(registers_to_bytes(regs)) == 10.0
    assert encode_value(p, 10.0) == regs


def test_int32_orders_against_known_layouts() -> None:
    value = 0x11223344
    layouts = {
        ("big", "big"): [0x1122, 0x3344],
        ("big", "little"): [0x3344, 0x1122],
        ("little", "big"): [0x2211, 0x4433],
        ("little", "little"): [0x4433, 0x2211],
    }
    for (bo, wo), regs in layouts.items():
        p = point(address=0, type="uint32", byte_order=bo, word_order=wo)
        assert register_decoder(p, 0)(registers_to_bytes(regs)) == value, (bo, wo)


def test_64_bit_layouts() -> None:
    regs = [0x0102, 0x0304, 0x0506, 0x0708]
    p = point(address=0, type="uint64")
    assert register_decoder(p, 0)(registers_to_bytes(regs)) == 0x0102030405060708
    p = point(address=0, type="uint64", word_order="little")
    assert register_decoder(p, 0)(registers_to_bytes(regs)) == 0x0708050603040102
    p = point(address=0, type="int64", byte_order="little", word_order="little")
    assert register_decoder(p, 0)(registers_to_bytes(regs)) == struct.unpack(
        "<q", bytes.fromhex("0102030405060708")
    )[0]
    f = point(address=0, type="float64", word_order="little")
    regs = encode_value(f, -1234.5678)
    assert register_decoder(f, 0)(registers_to_bytes(regs)) == -1234.5678


@pytest.mark.parametrize(
    ("typ", "regs", "expected"),
    [
        ("int16", [0xFFFE], -2),
        ("uint16", [0xFFFE], 65534),
        ("int32", [0xFFFF, 0xFFFD], -3),
        ("bool", [0], False),
        ("bool", [7], True),
    ],
)
def test_integer_and_bool_types(typ: str, regs: list[int], expected: object) -> None:
    assert register_decoder(point(address=0, type=typ), 0)(registers_to_bytes(regs)) == expected


def test_bit_in_register_scale_offset_and_index() -> None:
    payload = registers_to_bytes([0, 0b1000_0000_0000_0100, 250])
    assert register_decoder(point(address=1, type="bit", bit=2), 1)(payload) is True
    assert register_decoder(point(address=1, type="bit", bit=15), 1)(payload) is True
    assert register_decoder(point(address=1, type="bit", bit=3), 1)(payload) is False
    scaled = point(address=2, type="int16", scale=0.1, offset=-5.0)
    assert register_decoder(scaled, 2)(payload) == pytest.approx(20.0)
    assert encode_value(scaled, 20.0) == [250]


def test_strings_and_nan_and_garbage() -> None:
    s = point(address=0, type="string", length=4)
    regs = encode_value(s, "PUMP1")
    assert regs[:3] == [0x5055, 0x4D50, 0x3100]
    assert register_decoder(s, 0)(registers_to_bytes(regs)) == "PUMP1"
    swapped = point(address=0, type="string", length=4, byte_order="little")
    assert register_decoder(swapped, 0)(registers_to_bytes(encode_value(swapped, "AB"))) == "AB"
    assert register_decoder(s, 0)(registers_to_bytes([0xFFFF] * 4)) is None  # not ASCII: BAD
    f = point(address=0, type="float32")
    assert register_decoder(f, 0)(registers_to_bytes([0x7FC0, 0])) is None  # NaN: BAD
    assert register_decoder(f, 0)(registers_to_bytes([0x7F80, 0])) is None  # +inf: BAD
    assert math.isclose(register_decoder(f, 0)(registers_to_bytes([0x3F80, 0])), 1.0)


# -- config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"address": 0, "table": "coil", "type": "uint16"}, "bool only"),
        ({"address": 0, "type": "bit"}, "'bit' is required"),
        ({"address": 0, "type": "string"}, "'length' is required"),
        ({"address": 0, "type": "bool", "scale": 2.0}, "numeric types only"),
        ({"address": 65535, "type": "float32"}, "exceeds"),
        ({"address": 0, "type": "float33"}, "Invalid enum value 'float33'"),
        ({"address": 0, "type": "int16", "bogus": 1}, "unknown field `bogus`"),
    ],
)
def test_point_config_errors(raw: dict, match: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=match):
        msgspec.convert({"parameter": "p", **raw}, Point)


def test_adapter_config_errors_name_the_path() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.groups\[0\]\.points\[0\]\.type"):
        adapter([{"parameter": "t", "address": 0, "type": "nope"}])
    with pytest.raises(msgspec.ValidationError, match="exceed max_registers_per_read"):
        adapter([{"parameter": "s", "address": 0, "type": "string", "length": 20}],
                max_registers_per_read=10)
    with pytest.raises(msgspec.ValidationError, match="no points"):
        adapter([])
    with pytest.raises(msgspec.ValidationError, match="duplicate point a/t"):
        adapter([{"parameter": "t", "address": 0}, {"parameter": "t", "address": 1}])
    with pytest.raises(msgspec.ValidationError, match="no asset_id"):
        msgspec.convert({"points": [{"parameter": "t", "address": 0}]}, PointGroup)
    cfg = adapter([{"parameter": "t", "address": 0}])
    assert cfg.port == 502 and cfg.poll_interval == 1.0


# -- planning -----------------------------------------------------------------------


def _plan(points: list[dict], **settings) -> list:
    group = msgspec.convert({"unit_id": 1, "asset_id": "a", "points": points}, PointGroup)
    return plan_reads([group], msgspec.convert(settings, PollSettings))


def test_contiguous_and_overlapping_points_share_one_read() -> None:
    pts = [
        {"parameter": "a", "address": 10, "type": "float32"},
        {"parameter": "b", "address": 12, "type": "int16"},
        {"parameter": "c", "address": 10, "type": "bit", "bit": 3},  # overlaps a
        {"parameter": "d", "address": 13, "type": "float64"},
    ]
    reads = _plan(pts)
    assert [(r.table, r.address, r.count) for r in reads] == [(Table.HOLDING, 10, 7)]
    assert {pp.point.parameter for pp in reads[0].points} == {"a", "b", "c", "d"}


def test_gap_and_max_registers_split_reads() -> None:
    pts = [
        {"parameter": "a", "address": 0},
        {"parameter": "b", "address": 5},  # gap 4
        {"parameter": "c", "address": 20},  # gap 14
    ]
    assert [(r.address, r.count) for r in _plan(pts, max_gap=4)] == [(0, 6), (20, 1)]
    assert [(r.address, r.count) for r in _plan(pts, max_gap=3)] == [(0, 1), (5, 1), (20, 1)]
    assert [(r.address, r.count) for r in _plan(pts, max_gap=20)] == [(0, 21)]
    assert [(r.address, r.count) for r in _plan(pts, max_gap=20, max_registers_per_read=10)] == [
        (0, 6),
        (20, 1),
    ]


def test_tables_and_units_never_share_a_read() -> None:
    pts = [
        {"parameter": "h", "address": 0},
        {"parameter": "i", "address": 0, "table": "input"},
        {"parameter": "c0", "address": 0, "table": "coil", "type": "bool"},
        {"parameter": "c9", "address": 9, "table": "coil", "type": "bool"},
        {"parameter": "d", "address": 0, "table": "discrete", "type": "bool"},
    ]
    reads = _plan(pts)
    assert sorted((r.function_code, r.address, r.count) for r in reads) == [
        (1, 0, 10),
        (2, 0, 1),
        (3, 0, 1),
        (4, 0, 1),
    ]


def test_many_points_respect_the_limit_exactly() -> None:
    pts = [{"parameter": f"p{i}", "address": i * 2, "type": "float32"} for i in range(100)]
    reads = _plan(pts, max_registers_per_read=125)
    assert [(r.address, r.count) for r in reads] == [(0, 124), (124, 76)]
    assert sum(len(r.points) for r in reads) == 100


def _batch_values(points: list[dict], regs: list[int]) -> list:
    reads = _plan(points, max_gap=10)
    assert len(reads) == 1
    req = reads[0]
    raw = req.unpack(registers_to_bytes(regs))
    out = []
    for pp, v in zip(req.points, raw, strict=True):
        out.append(pp.post(v) if pp.post else v)
    return [out, [pp.decode(registers_to_bytes(regs)) for pp in req.points]]


@pytest.mark.parametrize("orders", [("big", "big"), ("little", "little"), ("big", "little")])
def test_batch_unpack_matches_per_point_decoders(orders: tuple[str, str]) -> None:
    bo, wo = orders
    pts = [
        {"parameter": "a", "address": 0, "type": "float32", "byte_order": bo, "word_order": wo},
        {"parameter": "b", "address": 3, "type": "int16", "byte_order": bo, "scale": 0.5},
        {"parameter": "c", "address": 4, "type": "bit", "bit": 4, "byte_order": bo},
        {"parameter": "d", "address": 5, "type": "uint64", "byte_order": bo, "word_order": wo},
        {"parameter": "e", "address": 9, "type": "string", "length": 2, "byte_order": bo},
        {"parameter": "f", "address": 11, "type": "bool", "byte_order": bo},
    ]
    regs = [0x4120, 0x0001, 0xBEEF, 0xFF10, 0x0010, 1, 2, 3, 4, 0x4142, 0x4300, 0, 9]
    batched, single = _batch_values(pts, regs)
    assert batched == single
    assert batched[2] is (bo == "big") and batched[5] is False  # 0x0010 bit 4


def test_overlapping_points_fall_back_to_per_point_decoding() -> None:
    pts = [
        {"parameter": "word", "address": 0, "type": "uint16"},
        {"parameter": "flag", "address": 0, "type": "bit", "bit": 15},
        {"parameter": "f", "address": 0, "type": "float32"},
    ]
    batched, single = _batch_values(pts, [0xC000, 0])
    assert batched == single
    assert sorted(map(str, batched)) == sorted(map(str, [49152, True, -2.0]))


EXAMPLE_TOML = """
[[adapters]]
type = "modbus_tcp"
id = "press-plc"
host = "127.0.0.1"
port = 5020
max_registers_per_read = 100

  [[adapters.groups]]
  unit_id = 1
  asset_id = "press-1"

    [[adapters.groups.points]]
    parameter = "oil_temperature"
    address = 0
    type = "float32"
    word_order = "little"
    unit = "degC"

    [[adapters.groups.points]]
    parameter = "overtemp_trip"
    address = 4
    type = "bit"
    bit = 0
    classification = "ALARM"

[[adapters]]
type = "modbus_rtu"
id = "rs485-line-1"
port = "/dev/ttyUSB0"
parity = "E"

  [[adapters.groups]]
  unit_id = 7
  asset_id = "chiller-7"
  timeout = 0.2

    [[adapters.groups.points]]
    parameter = "supply_temp"
    table = "input"
    address = 100
    type = "int16"
    scale = 0.1
"""


def test_example_toml_decodes_through_the_gateway_schema() -> None:
    import tomllib

    from otgate.config.load import decode
    from otgate.protocols.modbus_rtu import ModbusRtuAdapter

    cfg = decode(tomllib.loads(EXAMPLE_TOML))
    tcp, rtu = cfg.adapters
    assert isinstance(tcp, ModbusTcpAdapter) and isinstance(rtu, ModbusRtuAdapter)
    assert tcp.groups[0].points[1].classification.value == "ALARM"
    assert rtu.parity.value == "E" and rtu.groups[0].timeout == 0.2
    assert len(plan_reads(tcp.groups, tcp)) == 1


def test_raw_register_response_keeps_bytes_and_lists_on_demand() -> None:
    from otgate.protocols.modbus.client import RawHoldingRegisters

    rr = RawHoldingRegisters()
    rr.decode(bytes([4, 0x12, 0x34, 0xAB, 0xCD]))
    assert rr.raw == bytes.fromhex("1234abcd")
    assert rr.registers == [0x1234, 0xABCD]
    with pytest.raises(Exception, match="byte_count"):
        rr.decode(bytes([9, 1, 2]))


def test_planning_invariants_on_random_layouts() -> None:
    """Every point in exactly one read of its table; reads within limits; the
    plan never has more reads than points; decode agrees with per-point."""
    import random

    rng = random.Random(42)
    types = ["int16", "uint16", "int32", "float32", "float64", "uint64", "bool"]
    for _ in range(200):
        pts = []
        for i in range(rng.randint(1, 40)):
            t = rng.choice(types)
            addr = rng.randint(0, 300)
            table = rng.choice(["holding", "input"])
            pts.append({"parameter": f"p{i}", "address": addr, "type": t, "table": table,
                        "word_order": rng.choice(["big", "little"])})
        max_regs, max_gap = rng.randint(4, 125), rng.randint(0, 20)
        reads = _plan(pts, max_registers_per_read=max_regs, max_gap=max_gap)
        seen = [pp.point.parameter for r in reads for pp in r.points]
        assert sorted(seen) == sorted(p["parameter"] for p in pts)
        assert len(reads) <= len(pts)
        for r in reads:
            assert 1 <= r.count <= max_regs
            for pp in r.points:
                p = pp.point
                assert p.table is r.table
                assert r.address <= p.address and p.address + p.width <= r.address + r.count
            regs = [rng.randrange(65536) for _ in range(r.count)]
            payload = registers_to_bytes(regs)
            raw = r.unpack(payload)
            for pp, v in zip(r.points, raw, strict=True):
                got = pp.post(v) if pp.post else v
                want = pp.decode(payload)
                if isinstance(want, float) and want != want:
                    continue
                if want is None:  # NaN/inf: the session turns the raw float into BAD
                    assert isinstance(got, float) and got - got != 0.0
                else:
                    assert got == want
