"""One test per validator rule (pure RuleSet, no log)."""

from __future__ import annotations

import msgspec
import pytest

from otgate.actors.records import Classification, Quality, Reading
from otgate.actors.validator.config import (
    OnDuplicate,
    OnViolation,
    ParameterRule,
    ValidatorConfig,
)
from otgate.actors.validator.rules import RuleSet

S = 1_000_000_000
T0 = 1_700_000_000 * S


def rd(value=1.0, t=0.0, *, parameter="temp", asset="pump-1", quality=Quality.GOOD,
       device_time=True, gw_offset_s=0.0, skew=None):
    dt = T0 + int(t * S)
    return Reading(
        asset_id=asset, parameter=parameter, value=value, quality=quality,
        device_time=dt if device_time else None,
        gateway_time=dt + int(gw_offset_s * S), clock_skew_ms=skew,
    )


def rules(*rs: ParameterRule, **kw) -> RuleSet:
    return RuleSet(ValidatorConfig(rules=list(rs), **kw))


def test_clean_reading_passes_as_the_same_object():
    r = rd(5.0)
    v = rules(ParameterRule(parameter="temp", min=0, max=10)).check(r)
    assert v.reject is None and v.events == []
    assert v.reading is r  # unchanged: the actor copies the raw bytes


def test_range_marks_bad_by_default():
    rs = rules(ParameterRule(parameter="temp", min=0, max=100))
    assert rs.check(rd(50, 0)).reading.quality is Quality.GOOD
    assert rs.check(rd(101, 1)).reading.quality is Quality.BAD
    assert rs.check(rd(-1, 2)).reading.quality is Quality.BAD
    assert rs.counts["out_of_range"] == 2


def test_range_reject_goes_to_dlq_with_reason():
    rs = rules(ParameterRule(parameter="temp", max=100, on_out_of_range=OnViolation.REJECT))
    v = rs.check(rd(150))
    assert v.reading is None and v.reject is not None and v.reject.startswith("out_of_range")


def test_range_suspect():
    rs = rules(ParameterRule(parameter="t*", min=0, on_out_of_range=OnViolation.SUSPECT))
    assert rs.check(rd(-5)).reading.quality is Quality.SUSPECT


def test_rate_of_change_marks_suspect():
    rs = rules(ParameterRule(parameter="temp", max_rate_per_s=10))
    assert rs.check(rd(0.0, 0)).reading.quality is Quality.GOOD
    assert rs.check(rd(5.0, 1)).reading.quality is Quality.GOOD  # 5/s
    assert rs.check(rd(30.0, 2)).reading.quality is Quality.SUSPECT  # 25/s
    # the baseline moved to 30: a slow change from there is fine again
    assert rs.check(rd(35.0, 3)).reading.quality is Quality.GOOD


def test_rate_of_change_ignores_out_of_order_readings():
    rs = rules(ParameterRule(parameter="temp", max_rate_per_s=1))
    rs.check(rd(0.0, 10))
    v = rs.check(rd(100.0, 5))  # older than the baseline: no rate check
    assert v.reading.quality is Quality.GOOD


def test_quality_never_improves():
    rs = rules(ParameterRule(parameter="temp", min=0, max=100))
    v = rs.check(rd(50, quality=Quality.UNCERTAIN))
    assert v.reading.quality is Quality.UNCERTAIN
    v = rs.check(rd(500, 1, quality=Quality.SUSPECT))
    assert v.reading.quality is Quality.BAD


def test_duplicate_goes_to_dlq():
    rs = rules()
    assert rs.check(rd(1.0, 0)).reading is not None
    v = rs.check(rd(2.0, 0))
    assert v.reading is None and v.reject == "duplicate"
    assert rs.check(rd(1.0, 0, parameter="other")).reading is not None  # other stream


def test_duplicate_drop_and_keep():
    rs = rules(on_duplicate=OnDuplicate.DROP)
    rs.check(rd(1.0, 0))
    v = rs.check(rd(1.0, 0))
    assert v.reading is None and v.reject is None
    rs = rules(on_duplicate=OnDuplicate.KEEP)
    rs.check(rd(1.0, 0))
    assert rs.check(rd(1.0, 0)).reading is not None


def test_duplicate_memory_is_bounded():
    rs = rules(duplicate_memory=2)
    for t in range(3):
        rs.check(rd(1.0, t))
    assert rs.check(rd(1.0, 0)).reject is None  # forgotten: only the last 2 kept
    assert rs.check(rd(1.0, 2)).reject == "duplicate"


def test_gap_event():
    rs = rules(ParameterRule(parameter="temp", expected_interval_s=1.0, gap_factor=2.5))
    assert rs.check(rd(1.0, 0)).events == []
    assert rs.check(rd(1.0, 2)).events == []  # 2 s <= 2.5 s
    v = rs.check(rd(1.0, 10))
    assert v.reading is not None and v.reading.quality is Quality.GOOD
    (ev,) = v.events
    assert ev.classification is Classification.EVENT
    assert ev.parameter == "temp:gap" and ev.value == pytest.approx(8.0) and ev.unit == "s"
    assert ev.device_time == T0 + 10 * S


def test_missing_device_time_uses_gateway_time_and_uncertain():
    v = rules().check(rd(1.0, 3, device_time=False))
    assert v.reading.device_time == v.reading.gateway_time == T0 + 3 * S
    assert v.reading.quality is Quality.UNCERTAIN


def test_clock_skew_event_and_rate_limit():
    rs = rules(max_clock_skew_s=10, skew_event_interval_s=60)
    assert rs.check(rd(1.0, 0, gw_offset_s=9)).events == []
    v = rs.check(rd(1.0, 1, gw_offset_s=-11))
    (ev,) = v.events
    assert ev.parameter == "clock_skew" and ev.value == -11000.0 and ev.unit == "ms"
    assert rs.check(rd(1.0, 2, gw_offset_s=-11)).events == []  # within 60 s
    assert len(rs.check(rd(1.0, 70, gw_offset_s=-11)).events) == 1


def test_clock_skew_from_reading_field():
    v = rules().check(rd(1.0, skew=20_000))
    assert [e.parameter for e in v.events] == ["clock_skew"]


def test_string_with_numeric_rule_rejected_and_none_is_bad():
    rs = rules(ParameterRule(parameter="temp", max=10))
    assert rs.check(rd("hot", 0)).reject == "not_numeric"
    assert rs.check(rd(None, 1)).reading.quality is Quality.BAD
    assert rs.check(rd(float("nan"), 2)).reading.quality is Quality.BAD
    assert rules().check(rd("running", 0)).reading.value == "running"  # no numeric rule


def test_missing_identity_rejected():
    assert rules().check(rd(asset="")).reject == "missing_asset_id"
    assert rules().check(rd(parameter="")).reject == "missing_parameter"


def test_first_matching_rule_wins_and_asset_pattern():
    rs = rules(
        ParameterRule(parameter="temp", asset="boiler-*", max=500),
        ParameterRule(parameter="*", max=100),
    )
    assert rs.check(rd(200, asset="boiler-1")).reading.quality is Quality.GOOD
    assert rs.check(rd(200, asset="pump-1")).reading.quality is Quality.BAD


def test_config_rejects_min_above_max_and_bad_inputs():
    with pytest.raises(msgspec.ValidationError, match="min"):
        msgspec.convert({"rules": [{"parameter": "x", "min": 5, "max": 1}]}, ValidatorConfig)
    with pytest.raises(msgspec.ValidationError, match=r"\.raw"):
        msgspec.convert({"inputs": ["telemetry.clean"]}, ValidatorConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"rules": [{"parameter": "x", "bogus": 1}]}, ValidatorConfig)
