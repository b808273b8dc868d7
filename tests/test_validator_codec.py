"""The stages' codec: the compiled fast decoder equals the log's decoder, and fails cleanly."""

from __future__ import annotations

import random
import struct

import msgspec
import pytest
from stage_log import open_log

from otgate.actors.log import avro
from otgate.actors.log.publisher import Decoder
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.records import Aggregate, Classification, DeadLetter, Quality, Reading
from otgate.actors.stage_codec import LogCodec
from otgate.actors.stage_decoder import compile_decoder
from otgate.actors.validator.actor import DECODE_ERRORS


def random_reading(rng: random.Random) -> Reading:
    value = rng.choice([None, True, False, rng.randint(-(2**62), 2**62), rng.random() * 1e9,
                        "".join(rng.choice("aé€x😀") for _ in range(rng.randint(0, 300)))])
    return Reading(
        asset_id=f"asset-{rng.randint(0, 10**9)}", parameter="p" * rng.randint(1, 200),
        value=value, unit=rng.choice(["", "°C", "bar"]), quality=rng.choice(list(Quality)),
        classification=rng.choice(list(Classification)),
        device_time=rng.choice([None, rng.randint(-(2**63), 2**63 - 1)]),
        gateway_time=rng.randint(0, 2**63 - 1), clock_skew_ms=rng.choice([None, -5, 10**12]),
        seq=rng.randint(0, 2**40), adapter_id="a", adapter_version="1.0",
    )


def test_fast_decoder_matches_encoder_for_random_readings():
    rng = random.Random(5)
    enc = avro.compile_encoder(Reading)
    dec = compile_decoder(Reading)
    for _ in range(2000):
        r = random_reading(rng)
        assert dec(enc(r, b"\x00\x00\x00\x00\x01")) == r


def test_fast_decoder_aggregate_and_nested_unsupported():
    enc = avro.compile_encoder(Aggregate)
    a = Aggregate(asset_id="a", parameter="p", window="1s", window_start=1, window_end=2,
                  count=3, min=0.5, max=None, first="x", last=7, gateway_time=9)
    assert compile_decoder(Aggregate)(enc(a, b"\x00" * 5)) == a
    with pytest.raises(TypeError):
        compile_decoder(DeadLetter)  # a nested record: the slow path decodes it


def test_malformed_values_raise_decode_errors():
    enc = avro.compile_encoder(Reading)
    good = enc(Reading(asset_id="a", parameter="p", value=1.5, gateway_time=1), b"\x00" * 5)
    dec = compile_decoder(Reading)
    for bad in (good[:-1], good[:9], good + b"\x00", good[:5] + b"\x7f" + good[6:]):
        with pytest.raises((*DECODE_ERRORS, struct.error)):
            dec(bad)


@pytest.mark.anyio
async def test_log_codec_uses_fast_path_only_for_the_current_schema(tmp_path):
    lg = await open_log(tmp_path)
    try:
        schemas = EmbeddedSchemaStore(lg)
        codec = LogCodec(schemas)
        await codec.prepare(["telemetry.clean", "dlq.telemetry"])
        r = Reading(asset_id="a", parameter="p", value=2, gateway_time=1)
        v = codec.encode("telemetry.clean", r)
        assert codec.decode("telemetry.clean", v) == r
        assert codec._fast[("telemetry.clean", v[:5])] is not None
        d = DeadLetter(reading=r, reason="x", gateway_time=3)
        dv = codec.encode("dlq.telemetry", d)
        assert codec.decode("dlq.telemetry", dv) == d
        assert codec._fast[("dlq.telemetry", dv[:5])] is None  # slow path
        # an older writer schema (no adapter_version field) resolves through the slow path
        old = avro.avro_schema(Reading)
        old["fields"] = [f for f in old["fields"] if f["name"] != "adapter_version"]
        sid = await schemas.register("telemetry.clean-value", old)
        body = avro.compile_encoder(Reading)(r, b"")[:-1]  # drop the last field ('' = 1 byte)
        got = LogCodec(schemas).decode("telemetry.clean", avro.wire_header(sid) + body)
        assert got == r
        assert Decoder(schemas).decode("telemetry.clean", avro.wire_header(sid) + body) == r
        with pytest.raises(DECODE_ERRORS):
            codec.decode("telemetry.clean", v[:-3])
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_memo_returns_the_remembered_record_once_and_is_bounded(tmp_path, monkeypatch):
    import otgate.actors.stage_codec as sc

    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        await codec.prepare(["telemetry.clean", "telemetry.1s"])
        r = Reading(asset_id="a", parameter="p", value=2.5, gateway_time=1)
        v = codec.encode("telemetry.clean", r)
        codec.remember("telemetry.1s", [v], [r])
        with pytest.raises(Exception):  # noqa: B017 - another record type: never from the memo
            codec.decode("telemetry.1s", v)
        codec.remember("telemetry.clean", [v], [r])
        assert codec.decode("telemetry.clean", v) is r  # from the memo ...
        again = codec.decode("telemetry.clean", v)
        assert again == r and again is not r  # ... once; then decoded
        monkeypatch.setattr(sc, "MEMO_SIZE", 3)
        values = [codec.encode("telemetry.clean", Reading(asset_id="a", parameter="p",
                                                          value=i, gateway_time=1))
                  for i in range(10)]
        for i, value in enumerate(values):
            codec.remember("telemetry.clean", [value], [i])
        assert len(codec._memo) + len(codec._memo_old) <= 6
        codec.remember("telemetry.clean", values[:4], list(range(4)))  # one batch: may pass it
        assert len(codec._memo) + len(codec._memo_old) <= 6 + 4
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_row_decoder_builds_the_postgres_row_of_the_reading(tmp_path):
    from otgate.sinks.postgres.client import (
        AGGREGATE_ROW,
        READING_ROW,
        ROW_HELPERS,
        aggregate_row,
        reading_row,
    )

    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        await codec.prepare(["telemetry.clean"])
        rng = random.Random(9)
        for _ in range(500):
            r = random_reading(rng)
            v = codec.encode("telemetry.clean", r)
            fn = codec.row_decoder("telemetry.clean", v, READING_ROW, ROW_HELPERS)
            assert fn is not None and fn(v, 5) == reading_row(r)
        with pytest.raises((*DECODE_ERRORS, struct.error)):
            fn(v[:-2], 5)
        await codec.prepare(["telemetry.1s"])
        a = Aggregate(asset_id="a", parameter="p", window="1s", window_start=1, window_end=2,
                      count=3, min=0.5, max=None, first="x", last=7, gateway_time=9,
                      quality=Quality.SUSPECT, p95=2.5, count_bad=1)
        v = codec.encode("telemetry.1s", a)
        fn = codec.row_decoder("telemetry.1s", v, AGGREGATE_ROW, ROW_HELPERS)
        assert fn is not None and fn(v, 5) == aggregate_row(a)
    finally:
        await lg.close()


def test_row_decoder_and_cached_runs_match_for_random_readings():
    """The runs of strings/enums are looked up by their bytes: values of every length
    (one- and two-byte lengths next to each other) decode to what was written, in
    both the Struct and the row form, however the caches were filled before."""
    rng = random.Random(9)
    enc = avro.compile_encoder(Reading)
    dec = compile_decoder(Reading)
    row = compile_decoder(Reading, "(f_asset_id, f_parameter, f_unit, f_quality, f_adapter_id)")
    names = ["a", "a" * 63, "a" * 64, "a" * 65, "é" * 40, ""]
    for _ in range(3000):
        r = msgspec.structs.replace(
            random_reading(rng), asset_id=rng.choice(names), parameter=rng.choice(names) or "p",
            unit=rng.choice(names), adapter_id=rng.choice(names),
            adapter_version=rng.choice(names))
        v = enc(r, b"\x00" * 5)
        assert dec(v) == r
        assert row(v) == (r.asset_id, r.parameter, r.unit, r.quality.value, r.adapter_id)
