"""The sinks' column decoder (``sinks.columns``) against the codec's object decoder:
the same values for every field, longs of every varint length and sign included."""

from __future__ import annotations

import random

import pytest

from otgate.actors.log import avro
from otgate.actors.records import Classification, Quality, Reading
from otgate.actors.stage_codec import compile_decoder
from otgate.sinks.columns import column_decoder

HEADER = b"\x00\x00\x00\x00\x07"
FIELDS = tuple(f"f_{name}" for name in Reading.__struct_fields__)  # the raw values


def test_columns_hold_the_decoded_fields_for_longs_of_every_length():
    rnd = random.Random(7)
    edge = [-2**63, -2**62, -2**56, -8193, -64, -1, 0, 1, 63, 64, 8191, 8192, 2**20,
            2**55, 2**56 - 1, 2**56, 2**62, 2**63 - 1]
    longs = edge + [rnd.randint(-2**63, 2**63 - 1) for _ in range(3000)]
    objs = [Reading(asset_id=f"a{i % 7}", parameter="p", value=[1.5, n, True, "x", None][i % 5],
                    quality=list(Quality)[i % 4], classification=list(Classification)[i % 3],
                    device_time=None if i % 9 == 0 else n, gateway_time=~n if i % 2 else n,
                    clock_skew_ms=n >> 40 if i % 3 else None, seq=n & (2**63 - 1),
                    adapter_id="ad")
            for i, n in enumerate(longs)]
    enc = avro.compile_encoder(Reading)
    values = [enc(o, HEADER) for o in objs]
    cols = column_decoder(Reading, FIELDS)(values, HEADER)
    assert cols is not None
    dec = compile_decoder(Reading)
    for i, v in enumerate(values):
        o = dec(v, 5)
        assert o == objs[i]
        got = [c[i] for c in cols]
        want = [getattr(o, f) for f in Reading.__struct_fields__]
        assert got == [w.value if isinstance(w, (Quality, Classification)) else w for w in want]
        assert type(got[2]) is type(o.value)  # a bool stays a bool, an int an int


def test_values_of_another_schema_or_malformed_are_not_taken():
    enc = avro.compile_encoder(Reading)
    good = enc(Reading(asset_id="a", parameter="p", value=1.0, gateway_time=2**61), HEADER)
    decode = column_decoder(Reading, FIELDS)
    assert decode([good, b"\x00\x00\x00\x00\x08" + good[5:]], HEADER) is None
    for bad in (good[:-1], good + b"\x00", good[:20]):
        with pytest.raises((IndexError, ValueError)):
            decode([good, bad], HEADER)
