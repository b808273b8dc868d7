"""Writable-point config: refused with its path, and the value / role checks
the root and the session share."""

from __future__ import annotations

import msgspec
import pytest

from otgate.config.load import ConfigError, load_config
from otgate.protocols.modbus.config import Point
from otgate.protocols.modbus.convert import check_writable
from otgate.protocols.writes import WriteSpec, check_role, check_value, writable_index

BASE = """
[gateway]
id = "w"
[[adapters]]
type = "modbus_tcp"
id = "plc"
host = "127.0.0.1"
[[adapters.groups]]
unit_id = 1
asset_id = "press"
[[adapters.groups.points]]
parameter = "sp"
address = 0
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('table = "input"\nwritable = true', "only holding registers and coils are writable"),
        ("write = { min = 1.0 }", "'write' needs writable = true"),
        ('type = "float32"\nwritable = true\nwrite = { mode = "single" }', "mode single"),
        ('type = "bit"\nbit = 2\nwritable = true\nwrite = { mode = "multiple" }', "mask write"),
        ("writable = true\nwrite = { min = 5.0, max = 1.0 }", "write.min must be <= write.max"),
        ('writable = true\nwrite = { role = "boss" }', "adapters[0].groups[0].points[0].write.role"),
        ("writable = true\nwrite = { allowed = [] }", "write.allowed must not be empty"),
    ],
)
def test_bad_write_config_is_refused_with_its_path(tmp_path, extra: str, message: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(BASE + extra + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert message in text, text
    assert "adapters[0].groups[0].points[0]" in text, text


def test_writable_index_names_asset_parameter_and_limits(tmp_path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(BASE + 'writable = true\nwrite = { max = 9.0, role = "operator" }\n')
    cfg = load_config(path).config
    [(asset, param, spec)] = writable_index(cfg.adapters[0])
    assert (asset, param, spec.max, spec.role.value) == ("press", "sp", 9.0, "operator")


def test_value_and_role_checks() -> None:
    spec = WriteSpec(min=0.0, max=10.0)
    assert check_value(spec, 5) is None
    assert "above max" in check_value(spec, 11)
    assert "below min" in check_value(spec, -0.5)
    assert "numeric limits" in check_value(spec, "5")
    assert "numeric limits" in check_value(spec, True)  # a bool is no number here
    assert "finite" in check_value(WriteSpec(), float("nan"))
    assert "expected a number" in check_value(WriteSpec(), [1])
    assert "longer than 1024" in check_value(WriteSpec(), "x" * 2000)
    modes = WriteSpec(allowed=[1, 2, "auto"])
    assert check_value(modes, 2.0) is None and check_value(modes, "auto") is None
    assert "not in allowed" in check_value(modes, True)
    assert check_role(WriteSpec(), "engineer") is None and check_role(WriteSpec(), "admin") is None
    assert "needs engineer" in check_role(WriteSpec(), "operator")
    assert "unknown role" in check_role(WriteSpec(), "root")


@pytest.mark.parametrize(
    ("point", "value", "why"),
    [
        ({"type": "int16"}, 40000, "out of range for int16"),
        ({"type": "uint16"}, -1, "out of range for uint16"),
        ({"type": "int16"}, 1.5, "not a whole step of 1"),
        ({"type": "int16", "scale": 0.1}, 1.25, "not a whole step of 0.1"),
        ({"type": "float32"}, 1e39, "out of range for float32"),
        ({"type": "string", "length": 2}, "ABCDE", "longer than 4"),
        ({"type": "string", "length": 2}, "né", "only ASCII"),
        ({"type": "bool"}, 2, "true/false or 0/1"),
        ({"type": "uint16"}, "7", "takes a number"),
    ],
)
def test_values_a_register_cannot_hold(point: dict, value, why: str) -> None:
    p = msgspec.convert({"parameter": "p", "address": 0, "writable": True, **point}, Point)
    assert why in (check_writable(p, value) or ""), check_writable(p, value)


def test_values_a_register_holds() -> None:
    def point(**kw) -> Point:
        return msgspec.convert({"parameter": "p", "address": 0, **kw}, Point)

    assert check_writable(point(type="int16", scale=0.1), 1.2) is None
    assert check_writable(point(type="bool"), 1) is None
    assert check_writable(point(type="float64"), 1e300) is None
