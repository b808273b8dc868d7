"""Config errors name the path of what is wrong and the values it accepts."""

from __future__ import annotations

import pytest

from otgate.config.load import ConfigError, decode


def adapter(aid: str, **extra) -> dict:
    return {
        "type": "synthetic",
        "id": aid,
        "asset_id": "x",
        "points": [{"parameter": "p"}],
        **extra,
    }


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"gateway": {"idd": 1}}, "gateway: Object contains unknown field `idd`"),
        (
            {"adapters": [{"type": "nope"}]},
            "adapters[0].type: Invalid value 'nope' (expected one of",
        ),
        (
            {"sinks": [{"type": "nope"}]},
            "sinks[0].type: Invalid value 'nope' (expected one of alert_router, http, kafka, postgres, s3)",
        ),
        ({"adapters": [adapter("a", points=[])]}, "adapters[0]: points: at least one point"),
        (
            {"adapters": [adapter("a"), adapter("a")]},
            "adapters[1].id: 'a' is already used by adapters[0].id",
        ),
        ({"adapters": [adapter("log")]}, "adapters[0].id: 'log' is reserved"),
        (
            {"adapters": [adapter("processing")], "processing": {}},
            "adapters[0].id: 'processing' names the [processing] part",
        ),
        (
            {"adapters": [adapter("a")], "bulkheads": [{"id": "b", "members": ["z"]}]},
            "bulkheads[0].members[0]: no part has the id 'z'",
        ),
        (
            {
                "adapters": [adapter("a"), adapter("b")],
                "bulkheads": [{"id": "b", "members": ["a"]}],
            },
            "bulkheads[0].id: 'b' is the id of a part outside this bulkhead",
        ),
        ({"status": {"listen": "127.0.0.1:99999"}}, "status: listen: port 99999 is over 65535"),
        (
            {"supervision": {"bulkhead": {"jitter": 7}}},
            "supervision.bulkhead.jitter: Expected `float` <= 1.0",
        ),
        (
            {"supervision": {"heartbeat_interval": 5, "heartbeat_timeout": 1}},
            "supervision: heartbeat_timeout must be longer than heartbeat_interval",
        ),
    ],
)
def test_errors_name_the_path(tree: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        decode(tree)
    assert message in str(info.value)


def test_the_example_config_decodes() -> None:
    import tomllib
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "config" / "examples" / "gateway.toml"
    cfg = decode(tomllib.loads(example.read_text()))
    assert [type(a).__name__ for a in cfg.adapters] == [
        "ModbusTcpAdapter",
        "OpcUaSource",
        "MqttSource",
    ]


def modbus(point: dict) -> dict:
    return {
        "type": "modbus_tcp",
        "id": "plc",
        "host": "127.0.0.1",
        "groups": [{"asset_id": "x", "points": [{"parameter": "p", "address": 1, **point}]}],
    }


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (
            {"adapters": [modbus({"type": "flaot32"})]},
            "adapters[0].groups[0].points[0].type: Invalid enum value 'flaot32' (expected one of"
            " int16, uint16, int32, uint32, int64, uint64, float32, float64, bool, bit, string)",
        ),
        (
            {"adapters": [modbus({"byte_order": "middle"})]},
            "adapters[0].groups[0].points[0].byte_order: Invalid enum value 'middle'"
            " (expected one of big, little)",
        ),
        (
            {"adapters": [{"type": "modbus_rtu", "id": "rtu", "port": "/dev/x", "bytesize": 9}]},
            "adapters[0].bytesize: Invalid enum value 9 (expected one of 7, 8)",
        ),
        (
            {"adapters": [adapter("a", points=[{"parameter": "p", "signal": {"kind": "saw"}}])]},
            "adapters[0].points[0].signal.kind: Invalid value 'saw' (expected one of constant,",
        ),
        (
            {"processing": {"validator": {"on_duplicate": "ignore"}}},
            "processing.validator.on_duplicate: Invalid enum value 'ignore'"
            " (expected one of dlq, drop, keep)",
        ),
        (
            {"log": {"backend": "redpanda"}},
            "log.backend: Invalid enum value 'redpanda' (expected one of",
        ),
    ],
)
def test_enum_errors_list_the_accepted_values(tree: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        decode(tree)
    assert message in str(info.value)


def test_the_readme_quotes_the_real_enum_error() -> None:
    """The README's example error is what a misspelt point type really says."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    with pytest.raises(ConfigError) as info:
        decode({"adapters": [modbus({"type": "flaot32"})]})
    message = info.value.problems[0]
    quoted = message.replace("adapters[0].groups[0].points[0]", "adapters[0].groups[1].points[3]")
    assert f"gateway.toml: {quoted}\n" in readme
