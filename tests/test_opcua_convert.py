"""OPC UA config validation and DataValue conversion (no server)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from asyncua import ua

from otgate.actors.records import Quality
from otgate.protocols.opcua import OpcUaSource
from otgate.protocols.opcua.client import is_retriable
from otgate.protocols.opcua.convert import quality_of, to_ns, unpack

POINT = {"node_id": "ns=2;s=T", "asset_id": "a", "parameter": "t"}


def source(**over: object) -> OpcUaSource:
    raw: dict[str, object] = {
        "type": "opcua",
        "id": "u",
        "endpoint": "opc.tcp://h:4840",
        "points": [POINT],
    }
    raw.update(over)
    return msgspec.convert(raw, OpcUaSource)


@pytest.mark.parametrize(
    ("code", "quality"),
    [
        (ua.StatusCodes.Good, Quality.GOOD),
        (ua.StatusCodes.GoodClamped, Quality.GOOD),
        (ua.StatusCodes.UncertainLastUsableValue, Quality.UNCERTAIN),
        (ua.StatusCodes.UncertainSensorNotAccurate, Quality.UNCERTAIN),
        (ua.StatusCodes.BadSensorFailure, Quality.BAD),
        (ua.StatusCodes.BadCommunicationError, Quality.BAD),
    ],
)
def test_status_code_to_quality(code: int, quality: Quality) -> None:
    assert quality_of(ua.StatusCode(code)) is quality


def test_timestamps_to_ns() -> None:
    aware = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert to_ns(aware) == int(aware.timestamp()) * 10**9 + 123456000
    assert to_ns(aware.replace(tzinfo=None)) == to_ns(aware)
    assert to_ns(datetime(1601, 1, 1)) is None  # OPC UA null DateTime
    assert to_ns(None) is None


def test_unpack_prefers_source_timestamp_and_falls_back_to_server() -> None:
    src = datetime(2026, 1, 1, tzinfo=UTC)
    srv = datetime(2026, 1, 2, tzinfo=UTC)
    dv = ua.DataValue(ua.Variant(1.5), SourceTimestamp=src, ServerTimestamp=srv)
    assert unpack(dv, True) == (1.5, Quality.GOOD, to_ns(src), None)
    assert unpack(dv, False)[2] == to_ns(srv)
    dv = ua.DataValue(ua.Variant(1.5), ServerTimestamp=srv)
    assert unpack(dv, True)[2] == to_ns(srv)


def test_unpack_bad_values() -> None:
    assert unpack(ua.DataValue(ua.Variant(float("nan"))), True)[1:] == (
        Quality.BAD,
        None,
        "not_finite",
    )
    assert unpack(ua.DataValue(ua.Variant([1, 2])), True)[3] == "unsupported_type:list"
    assert unpack(ua.DataValue(ua.Variant(ua.LocalizedText("open"))), True)[0] == "open"
    bad = ua.DataValue(ua.Variant(3.0), StatusCode=ua.StatusCode(ua.StatusCodes.BadOutOfService))
    assert unpack(bad, True)[:2] == (None, Quality.BAD)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"security_policy": "Basic256Sha256"}, "both be 'None' or both be set"),
        ({"security_policy": "Basic256Sha256", "security_mode": "Sign"}, "certificate"),
        ({"username": "u"}, "together"),
        ({"points": []}, "must not be empty"),
        ({"points": [POINT, POINT]}, "duplicate"),
        ({"endpoint": "http://x"}, "opc"),
        ({"points": [{**POINT, "deadband": 1.0}]}, "deadband_type"),
        ({"mode": "push"}, r"Invalid enum value .push. - at `\$.mode`"),
    ],
)
def test_config_errors(over: dict, message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        source(**over)


def test_password_not_in_repr() -> None:
    assert "pw123" not in repr(source(username="u", password="pw123"))


def test_retriable_whitelist() -> None:
    assert is_retriable(ConnectionRefusedError(111, "refused"))
    assert is_retriable(TimeoutError())
    assert is_retriable(ua.UaStatusCodeError(ua.StatusCodes.BadServerHalted))
    assert not is_retriable(ua.UaStatusCodeError(ua.StatusCodes.BadUserAccessDenied))
    assert not is_retriable(ua.UaStatusCodeError(ua.StatusCodes.BadNodeIdUnknown))
    assert not is_retriable(ValueError("config"))
