"""Record Structs -> Avro schemas, the compiled encoder against fastavro, and
BACKWARD compatibility (a reader of v2 reads v1 records)."""

from __future__ import annotations

import io

import fastavro
import msgspec
import pytest

from otgate.actors.log import avro, compat
from otgate.actors.records import (
    Aggregate,
    Alarm,
    AlarmAction,
    AlarmCommand,
    AlarmSeverity,
    AlarmState,
    AuditRecord,
    Classification,
    DeadLetter,
    GatewayEvent,
    Heartbeat,
    Quality,
    Reading,
    Statistics,
    now_ns,
)

T0 = 1_700_000_000_000_000_000


def readings() -> list[Reading]:
    values = [1.5, -3, True, False, "OPEN", None, 0, 2**62, -(2**63), 0.0, "", "ünïcode"]
    return [
        Reading(
            asset_id=f"pump-{i}",
            parameter="p",
            value=v,
            unit="bar",
            quality=list(Quality)[i % 4],
            classification=list(Classification)[i % 3],
            device_time=None if i % 2 else T0 + i,
            gateway_time=T0 + i * 1000,
            clock_skew_ms=None if i % 3 else -i,
            seq=i,
            adapter_id="a",
            adapter_version="1",
        )
        for i, v in enumerate(values)
    ]


def samples() -> list[object]:
    r = readings()[0]
    return [
        *readings(),
        Aggregate(
            asset_id="a",
            parameter="p",
            window="1s",
            window_start=T0,
            window_end=T0 + 10**9,
            count=3,
            min=1.0,
            max=2.0,
            mean=1.5,
            sum=4.5,
            first=1,
            last="x",
            gateway_time=T0,
        ),
        Aggregate(
            asset_id="a",
            parameter="p",
            window="1h",
            window_start=T0,
            window_end=T0,
            count=0,
            gateway_time=T0,
        ),
        Alarm(
            alarm_id="a1",
            asset_id="a",
            parameter="p",
            occurrence_id="a1#1",
            seq=1,
            state=AlarmState.ACTIVE_UNACKED,
            previous_state=AlarmState.NORMAL,
            event="raise",
            active=True,
            acked=False,
            severity=AlarmSeverity.CRITICAL,
            value=True,
            limit=3.5,
            raised_time=T0,
            gateway_time=T0,
        ),
        AlarmCommand(
            request_id="r1",
            action=AlarmAction.SHELVE,
            alarm_ids=["a1", "a2"],
            note="maintenance",
            duration_s=600.0,
            by="ops",
            role="operator",
            source="127.0.0.1",
            gateway_time=T0,
        ),
        AuditRecord(who="ops", action="alarms.ack", target="a1", gateway_time=T0),
        DeadLetter(
            reading=r,
            reason="range",
            stage="validator",
            source_topic="telemetry.raw",
            source_offset=7,
            gateway_time=T0,
        ),
        GatewayEvent(
            kind="log_overflow",
            fields={"topic": "telemetry.raw", "deleted": "12"},
            gateway_time=now_ns(),
        ),
        GatewayEvent(kind="x", gateway_time=T0),
        Heartbeat(bulkhead_id="b", seq=3, gateway_time=T0),
        Statistics(actor_id="x", counters={"a": 1.0, "b": 2.5}, gateway_time=T0),
    ]


@pytest.mark.parametrize("obj", samples(), ids=lambda o: type(o).__name__)
def test_compiled_encoder_matches_fastavro_and_round_trips(obj) -> None:
    tp = type(obj)
    schema = avro.parse(avro.avro_schema(tp))
    encoded = avro.compile_encoder(tp)(obj, avro.wire_header(42))
    sid, body = avro.split_wire(encoded)
    assert sid == 42
    ref = io.BytesIO()
    fastavro.schemaless_writer(ref, schema, msgspec.to_builtins(obj))
    assert body == ref.getvalue()
    back = msgspec.convert(avro.decode_body(body, schema), tp)
    assert back == obj
    if isinstance(obj, Reading):
        assert type(back.value) is type(obj.value)  # bool stays bool, int stays int


def test_every_record_schema_parses_and_names_enums_once() -> None:
    for tp in (Reading, Aggregate, Alarm, AlarmCommand, AuditRecord, DeadLetter, GatewayEvent,
               Heartbeat, Statistics):
        fastavro.parse_schema(avro.avro_schema(tp), named_schemas={})
    s = avro.avro_schema(DeadLetter)
    assert s["fields"][0]["type"]["name"] == "Reading"


def test_value_union_puts_narrow_types_first() -> None:
    fields = {f["name"]: f for f in avro.avro_schema(Reading)["fields"]}
    assert fields["value"]["type"] == ["null", "boolean", "long", "double", "string"]
    assert fields["device_time"]["default"] is None
    assert fields["quality"]["default"] == "GOOD"


def test_encoder_refuses_a_value_no_branch_takes() -> None:
    bad = Reading(asset_id="a", parameter="p", value=[1, 2], gateway_time=1)  # type: ignore[arg-type]
    with pytest.raises(avro.EncodeError):
        avro.compile_encoder(Reading)(bad, b"")


def test_wire_format_rejects_other_bytes() -> None:
    with pytest.raises(avro.WireFormatError):
        avro.split_wire(b"\x01\x00\x00\x00\x01abc")
    with pytest.raises(avro.WireFormatError):
        avro.split_wire(b"\x00\x00")


def _v2() -> type:
    class Reading(msgspec.Struct, frozen=True, kw_only=True):  # same Avro name as v1
        """Reading with a new optional field (a BACKWARD-compatible change)."""

        asset_id: str
        parameter: str
        value: float | int | bool | str | None
        unit: str = ""
        quality: Quality = Quality.GOOD
        classification: Classification = Classification.TELEMETRY
        device_time: int | None = None
        gateway_time: int
        clock_skew_ms: int | None = None
        seq: int = 0
        adapter_id: str = ""
        adapter_version: str = ""
        site: str = "unknown"

    return Reading


def _broken() -> type:
    class Reading(msgspec.Struct, frozen=True, kw_only=True):
        asset_id: str
        parameter: str
        site: str  # new field, no default: v1 data cannot fill it

    return Reading


ReadingV2 = _v2()
ReadingBroken = _broken()


def test_reader_of_v2_reads_v1_records() -> None:
    v1 = avro.avro_schema(Reading)
    v2 = avro.avro_schema(ReadingV2)
    assert compat.backward_problems(v2, v1) == []
    r = readings()[0]
    body = avro.split_wire(avro.compile_encoder(Reading)(r, avro.wire_header(1)))[1]
    data = avro.decode_body(body, avro.parse(v1), avro.parse(v2))
    back = msgspec.convert(data, ReadingV2)
    assert back.site == "unknown" and back.asset_id == r.asset_id and back.value == r.value


def test_backward_check_names_the_breaking_field() -> None:
    problems = compat.backward_problems(avro.avro_schema(ReadingBroken), avro.avro_schema(Reading))
    assert problems == ["site: new field without a default"]
    # and fastavro agrees it cannot resolve
    body = avro.split_wire(avro.compile_encoder(Reading)(readings()[0], avro.wire_header(1)))[1]
    with pytest.raises(Exception):  # noqa: B017 - fastavro raises SchemaResolutionError
        avro.decode_body(
            body, avro.parse(avro.avro_schema(Reading)), avro.parse(avro.avro_schema(ReadingBroken))
        )


def test_zigzag_matches_fastavro_for_edge_values() -> None:
    for n in [
        0,
        1,
        -1,
        63,
        -64,
        64,
        8191,
        8192,
        2**34,
        2**35 - 1,
        2**35,
        T0,
        -T0,
        2**63 - 1,
        -(2**63),
    ]:
        ref = io.BytesIO()
        fastavro.schemaless_writer(ref, "long", n)
        assert avro.zigzag(n) == ref.getvalue(), n
