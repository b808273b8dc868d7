"""The validation rules as pure code: one reading in, a verdict and events out.

Order of checks for each reading (every check can only make quality worse,
GOOD < SUSPECT < UNCERTAIN < BAD, never better):

1. shape: empty asset_id or parameter → rejected ("missing_asset_id" / ...).
2. time: no device_time → device_time := gateway_time, quality ≥ UNCERTAIN;
   skew = clock_skew_ms, else gateway_time - device_time; |skew| >
   max_clock_skew_s → a ``clock_skew`` event (per asset, repeated at most
   every skew_event_interval_s). A reading no rule changed is passed on as
   the same object (the actor then copies its bytes instead of re-encoding).
3. duplicate: an (asset, parameter, device_time) seen recently → on_duplicate.
4. value: None → BAD (a failed read is data, not an error); NaN/±inf → BAD;
   a string or bool where a numeric rule applies → rejected ("not_numeric").
5. range [min, max] → on_out_of_range; rate of change against the previous
   accepted reading (in device time) → on_rate_exceeded.
6. gap: a device-time step > gap_factor * expected_interval_s → a
   ``<parameter>:gap`` event (value = seconds of silence). The reading is fine.

State (previous value/time, recent device times) is in memory only: after a
restart the first reading of each stream gets no rate/gap check and
duplicates older than the restart point are not recognised (the sinks'
upsert on (asset_id, parameter, device_time) still makes them harmless).
Out-of-order readings (device time not after the previous one) are checked
for range and duplicates but not for rate or gaps, and do not move the baseline.
"""

from __future__ import annotations

import collections
import fnmatch
import math
from dataclasses import dataclass, field

import msgspec

from otgate.actors.records import Classification, Quality, Reading
from otgate.actors.validator.config import OnDuplicate, OnViolation, ParameterRule, ValidatorConfig

_RANK = {q: i for i, q in enumerate(Quality)}
_NS = 1_000_000_000


def worst(a: Quality, b: Quality) -> Quality:
    """The worse of two qualities."""
    return a if _RANK[a] >= _RANK[b] else b


_SEVERITY = {OnViolation.SUSPECT: Quality.SUSPECT, OnViolation.BAD: Quality.BAD}
# enum members as module constants: ``Quality.BAD`` is a slow class lookup on 3.11
_BAD = Quality.BAD
_UNCERTAIN = Quality.UNCERTAIN


@dataclass(slots=True)
class _Stream:
    rule: ParameterRule | None
    numeric: bool
    last_time: int | None = None
    last_value: float | None = None
    recent: collections.deque[int] = field(default_factory=collections.deque)
    recent_set: set[int] = field(default_factory=set)


@dataclass(slots=True)
class Verdict:
    """Result of one reading: ``reading`` for *.clean, or ``reject`` for dlq.*.

    Both None means dropped (a duplicate with on_duplicate = "drop").
    """

    reading: Reading | None = None
    reject: str | None = None
    events: list[Reading] = field(default_factory=list)


class RuleSet:
    """Applies the configured rules; keeps per-stream state (see module doc)."""

    def __init__(self, config: ValidatorConfig) -> None:
        self.config = config
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._skew_last: dict[str, int] = {}
        self._max_skew_ms = config.max_clock_skew_s * 1000.0
        self._dup_memory = config.duplicate_memory
        self._skew_every_ns = int(config.skew_event_interval_s * _NS)
        self._counts: collections.Counter[str] = collections.Counter()
        self._clean = 0  # kept apart from _counts: it is the hot one

    @property
    def counts(self) -> collections.Counter[str]:
        """Readings per outcome and per rule hit (a copy)."""
        out = collections.Counter(self._counts)
        if self._clean:
            out["clean"] = self._clean
        return out

    def _rule_for(self, asset: str, parameter: str) -> ParameterRule | None:
        for rule in self.config.rules:
            if fnmatch.fnmatchcase(parameter, rule.parameter) and fnmatch.fnmatchcase(
                asset, rule.asset
            ):
                return rule
        return None

    def _stream(self, asset: str, parameter: str) -> _Stream:
        key = (asset, parameter)
        s = self._streams.get(key)
        if s is None:
            rule = self._rule_for(asset, parameter)
            numeric = rule is not None and (
                rule.min is not None or rule.max is not None or rule.max_rate_per_s is not None
            )
            s = self._streams[key] = _Stream(rule=rule, numeric=numeric)
        return s

    def check(self, r: Reading) -> Verdict:
        """Validate one reading; updates the stream state."""
        verdict = Verdict()
        out = self.validate(r, verdict.events)
        if isinstance(out, str):
            verdict.reject = out
        else:
            verdict.reading = out
        return verdict

    def validate(self, r: Reading, events: list[Reading]) -> Reading | str | None:
        """``check`` without the Verdict (the validator's hot path): the reading for
        *.clean (``r`` itself when no rule changed it), a reject reason for dlq.*, or
        None (dropped duplicate); events are appended to ``events``."""
        if not r.asset_id:
            return self._reject("missing_asset_id")
        if not r.parameter:
            return self._reject("missing_parameter")
        quality = r.quality
        changes: dict[str, object] | None = None

        # time rules
        device_time = r.device_time
        if device_time is None:
            device_time = r.gateway_time
            changes = {"device_time": device_time}
            quality = worst(quality, _UNCERTAIN)
            self._counts["missing_device_time"] += 1
        else:
            skew_ms = r.clock_skew_ms
            if skew_ms is None:
                skew_ms = (r.gateway_time - device_time) // 1_000_000
            if skew_ms > self._max_skew_ms or -skew_ms > self._max_skew_ms:
                self._skew_event(r, device_time, skew_ms, events)

        s = self._streams.get((r.asset_id, r.parameter))
        if s is None:
            s = self._stream(r.asset_id, r.parameter)
        rule = s.rule
        last_time = s.last_time
        in_order = last_time is None or device_time > last_time

        # duplicates
        if device_time in s.recent_set:
            self._counts["duplicate"] += 1
            mode = self.config.on_duplicate
            if mode is OnDuplicate.DLQ:
                return self._reject("duplicate")
            if mode is OnDuplicate.DROP:
                return None
        else:
            recent = s.recent
            recent.append(device_time)
            s.recent_set.add(device_time)
            if len(recent) > self._dup_memory:
                s.recent_set.discard(recent.popleft())

        # value rules
        value = r.value
        if type(value) is float:  # the usual case
            num: float | None = value if value - value == 0.0 else None  # NaN, ±inf: None
            if num is None:
                quality = _BAD
        elif value is None:
            num = None
            quality = _BAD
        elif isinstance(value, bool) or isinstance(value, str):
            num = None
            if s.numeric:
                return self._reject("not_numeric")
        else:
            num = float(value)
            if not math.isfinite(num):
                quality = _BAD
                num = None
        if rule is not None and num is not None:
            if (rule.min is not None and num < rule.min) or (
                rule.max is not None and num > rule.max
            ):
                self._counts["out_of_range"] += 1
                if rule.on_out_of_range is OnViolation.REJECT:
                    return self._reject(f"out_of_range [{rule.min}, {rule.max}]")
                quality = worst(quality, _SEVERITY[rule.on_out_of_range])
            if (
                rule.max_rate_per_s is not None
                and in_order
                and s.last_value is not None
                and last_time is not None
            ):
                rate = abs(num - s.last_value) * _NS / (device_time - last_time)
                if rate > rule.max_rate_per_s:
                    self._counts["rate_exceeded"] += 1
                    if rule.on_rate_exceeded is OnViolation.REJECT:
                        return self._reject(f"rate_exceeded {rate:.6g}/s")
                    quality = worst(quality, _SEVERITY[rule.on_rate_exceeded])

        # gaps, then move the baseline
        if in_order:
            if (
                rule is not None
                and rule.expected_interval_s is not None
                and last_time is not None
            ):
                step_s = (device_time - last_time) / _NS
                if step_s > rule.gap_factor * rule.expected_interval_s:
                    self._counts["gap"] += 1
                    events.append(_event(r, f"{r.parameter}:gap", step_s, "s", device_time))
            s.last_time = device_time
            if num is not None and quality is not _BAD:
                s.last_value = num

        self._clean += 1
        if quality is not r.quality:
            changes = changes or {}
            changes["quality"] = quality
        return msgspec.structs.replace(r, **changes) if changes else r

    def _skew_event(self, r: Reading, device_time: int, skew_ms: int,
                    events: list[Reading]) -> None:
        last = self._skew_last.get(r.asset_id)
        if last is not None and r.gateway_time - last < self._skew_every_ns:
            return
        self._skew_last[r.asset_id] = r.gateway_time
        self._counts["clock_skew"] += 1
        events.append(_event(r, "clock_skew", float(skew_ms), "ms", device_time))

    def _reject(self, reason: str) -> str:
        self._counts["rejected"] += 1
        return reason


def _event(r: Reading, parameter: str, value: float, unit: str, device_time: int) -> Reading:
    return Reading(
        asset_id=r.asset_id,
        parameter=parameter,
        value=value,
        unit=unit,
        quality=Quality.GOOD,
        classification=Classification.EVENT,
        device_time=device_time,
        gateway_time=r.gateway_time,
        clock_skew_ms=r.clock_skew_ms,
        seq=r.seq,
        adapter_id=r.adapter_id,
        adapter_version=r.adapter_version,
    )
