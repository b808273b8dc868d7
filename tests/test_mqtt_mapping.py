"""MQTT config validation and payload mapping (pure functions, no broker)."""

from __future__ import annotations

import msgspec
import pytest

from otgate.actors.records import Quality
from otgate.protocols.mqtt import MqttSource
from otgate.protocols.mqtt.config import TimeFormat, ValueType
from otgate.protocols.mqtt.mapping import (
    Router,
    check_type,
    parse_plain,
    to_device_time,
    topic_matches,
)


def cfg(**sub: object) -> MqttSource:
    base: dict[str, object] = {"topic": "plant/+/t", "asset_from_topic": 1}
    base.update(sub)
    if "fields" not in base and base.get("payload") != "plain":
        base["fields"] = [{"path": "v", "parameter": "v"}]
    return msgspec.convert({"type": "mqtt", "id": "m", "subscriptions": [base]}, MqttSource)


@pytest.mark.parametrize(
    ("topic", "filt", "hit"),
    [
        ("a/b/c", "a/+/c", True),
        ("a/b/c", "a/#", True),
        ("a", "a/#", True),
        ("a/b", "a/+/c", False),
        ("a/b/c/d", "a/+/c", False),
        ("$SYS/x", "#", False),
        ("$SYS/x", "$SYS/#", True),
    ],
)
def test_topic_matches(topic: str, filt: str, hit: bool) -> None:
    assert topic_matches(topic.split("/"), filt.split("/")) is hit


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        ({"asset_id": "x"}, "exactly one of asset_id"),
        ({"asset_from_topic": None}, "exactly one of asset_id"),
        ({"asset_from_topic": 5}, "past the last level"),
        ({"topic": "a/#/b"}, "'#' must be the whole last level"),
        ({"topic": "a/b+"}, r"'\+' must be a whole level"),
        ({"fields": []}, "at least one entry"),
        ({"payload": "plain"}, "exactly one of parameter"),
        (
            {"payload": "plain", "parameter": "p", "fields": [{"path": "v", "parameter": "v"}]},
            "fields are for json",
        ),
        (
            {"fields": [{"path": "a", "parameter": "v"}, {"path": "b", "parameter": "v"}]},
            "same parameter",
        ),
    ],
)
def test_config_errors_are_clear(sub: dict, message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        cfg(**sub)


def test_unknown_key_refused_with_path() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"subscriptions\[0\]"):
        cfg(qso=1)


def test_password_not_in_repr() -> None:
    raw = {
        "type": "mqtt",
        "id": "m",
        "username": "u",
        "password": "hunter2",
        "subscriptions": [{"topic": "a", "asset_id": "x", "payload": "plain", "parameter": "p"}],
    }
    source = msgspec.convert(raw, MqttSource)
    assert "hunter2" not in repr(source)
    assert source.effective_client_id == "otgate-m"


@pytest.mark.parametrize(
    ("body", "vtype", "expected"),
    [
        (b"42", ValueType.NUMBER, (42, None)),
        (b" -1.5e3 ", ValueType.NUMBER, (-1500.0, None)),
        (b"nan", ValueType.NUMBER, (None, "not_finite")),
        (b"inf", ValueType.NUMBER, (None, "not_finite")),
        (b"abc", ValueType.NUMBER, (None, "not_a_number")),
        (b"\xff", ValueType.NUMBER, (None, "not_utf8")),
        (b"ON", ValueType.BOOL, (True, None)),
        (b"0", ValueType.BOOL, (False, None)),
        (b"maybe", ValueType.BOOL, (None, "not_a_bool")),
        (b"running", ValueType.ANY, ("running", None)),
        (b"7", ValueType.ANY, (7, None)),
        (b" x ", ValueType.STRING, ("x", None)),
    ],
)
def test_parse_plain(body: bytes, vtype: ValueType, expected: tuple) -> None:
    assert parse_plain(body, vtype) == expected


@pytest.mark.parametrize(
    ("value", "vtype", "expected"),
    [
        (1, ValueType.NUMBER, (1, None)),
        (True, ValueType.NUMBER, (None, "wrong_type")),
        ("1", ValueType.NUMBER, (None, "wrong_type")),
        (True, ValueType.BOOL, (True, None)),
        (1, ValueType.BOOL, (None, "wrong_type")),
        ({"a": 1}, ValueType.ANY, (None, "wrong_type")),
        (None, ValueType.ANY, (None, "null")),
    ],
)
def test_check_type(value: object, vtype: ValueType, expected: tuple) -> None:
    assert check_type(value, vtype) == expected


def test_device_time_formats() -> None:
    assert to_device_time(1_700_000_000, TimeFormat.EPOCH_S) == 1_700_000_000 * 10**9
    assert to_device_time(1_700_000_000_500, TimeFormat.EPOCH_MS) == 1_700_000_000_500 * 10**6
    assert to_device_time(5, TimeFormat.EPOCH_NS) == 5
    assert to_device_time("2026-01-02T03:04:05.25Z", TimeFormat.ISO8601) == (
        1767323045 * 10**9 + 250_000_000
    )
    assert to_device_time("yesterday", TimeFormat.ISO8601) is None
    assert to_device_time(True, TimeFormat.EPOCH_MS) is None


def test_router_decodes_nested_paths_and_array_indexes() -> None:
    source = cfg(
        topic="site/+/+/data",
        asset_from_topic=2,
        time_path="meta.t",
        time_format="epoch_s",
        fields=[
            {"path": "sensors.1.value", "parameter": "second"},
            {"path": "status", "parameter": "status", "type": "string"},
        ],
    )
    router = Router(source)
    levels, subs = router.route("site/l1/pumpA/data")
    assert len(subs) == 1
    points, device_time, reason = subs[0].decode(
        levels, b'{"meta":{"t":10},"sensors":[{"value":1},{"value":2.5}],"status":"ok"}'
    )
    assert reason is None and device_time == 10 * 10**9
    assert [(m.asset_id, m.parameter, v, q) for m, v, q, _ in points] == [
        ("pumpA", "second", 2.5, Quality.GOOD),
        ("pumpA", "status", "ok", Quality.GOOD),
    ]
    assert router.route("site/l1/pumpA/other")[1] == []
