"""Alarm conditions: is this alarm's condition active, given the readings so far?

One ``Condition`` per alarm (definition x stream). It owns the three steps
between a reading and an alarm's activity, none of which does I/O:

1. ``test``: the definition's check with hysteresis (a limit's deadband
   applies while the condition holds). A reading the check cannot judge (no
   number, BAD quality for a limit, the first reading of a rate) changes
   nothing.
2. debounce: the condition must hold for ``on_delay_s`` before the alarm
   becomes active, and stay clear for ``off_delay_s`` before it clears. The
   delays run on the readings' own time (device time); ``poll`` advances them
   when no reading comes, by extrapolating the stream's time with the clock
   (last reading's time + time since it arrived), so a replayed backlog is
   judged on its own times, not on the wall clock.
3. order: a reading not newer than the stream's last one (a duplicate from an
   at-least-once replay, or one older than the alarm's last transition after
   a restart) is ignored, so a replay raises nothing twice.

Times are integer nanoseconds.
"""

from __future__ import annotations

from typing import Any

from otgate.actors.alarms.config import (
    AlarmDefinition,
    BadQuality,
    Boolean,
    Deviation,
    High,
    HighHigh,
    Low,
    LowLow,
    Rate,
    Stale,
)

S = 1_000_000_000
_HIGH, _LOW = "high", "low"
_TRUE_TEXT = frozenset({"1", "true", "on", "yes", "active"})


def number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def truthy(value: Any, bit: int | None = None) -> bool | None:
    """A value as a boolean alarm reads it (None: cannot tell)."""
    if value is None:
        return None
    if bit is not None:
        if isinstance(value, bool):
            return value if bit == 0 else False
        if isinstance(value, int):
            return bool((value >> bit) & 1)
        if isinstance(value, float) and value.is_integer():
            return bool((int(value) >> bit) & 1)
        return None
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_TEXT
    return bool(value)


class Condition:
    """The activity of one alarm (see module doc). ``active`` is the debounced state."""

    __slots__ = (
        "active",
        "at",
        "cond",
        "defn",
        "ignored",
        "kind",
        "last_arrival",
        "last_t",
        "prev_t",
        "prev_value",
        "setpoint",
        "since",
        "value",
        "watch_order",
    )

    def __init__(self, defn: AlarmDefinition, *, active: bool = False, last_t: int = -(1 << 62),
                 arrival: int = 0) -> None:
        self.defn = defn
        self.cond = active
        self.active = active
        self.since = last_t
        self.last_t = last_t
        self.last_arrival = arrival
        self.prev_value: float | None = None
        self.prev_t = 0
        self.value: Any = None
        self.setpoint: float | None = None  # a deviation's last setpoint_parameter value
        self.ignored = 0
        self.at = last_t  # time of the last change of ``active``
        # any reading ends a stale alarm, whatever its time (a device clock may lag
        # the gateway's; a stale alarm raises only once every earlier input is committed)
        self.watch_order = not isinstance(defn, Stale)
        # limits are most alarms: ``test`` judges them before the general dispatch
        self.kind = (_HIGH if isinstance(defn, High | HighHigh) else
                     _LOW if isinstance(defn, Low | LowLow) else None)

    # -- the definition's check ---------------------------------------------
    def test(self, value: Any, bad: bool, t: int) -> bool | None:
        d = self.defn
        kind = self.kind
        if kind is not None:  # a limit (High, HighHigh, Low, LowLow)
            v = value if type(value) is float else number(value)
            if v is None or bad:
                return None
            if kind is _HIGH:
                return v > d.limit - d.deadband if self.cond else v > d.limit
            return v < d.limit + d.deadband if self.cond else v < d.limit
        if isinstance(d, Boolean):
            hit = truthy(value, d.bit)
            return None if hit is None or bad else hit is d.active_when
        if isinstance(d, BadQuality):
            return bad
        if isinstance(d, Stale):
            return False
        v = number(value)
        if v is None or bad:
            return None
        if isinstance(d, Rate):
            pv, pt = self.prev_value, self.prev_t
            self.prev_value, self.prev_t = v, t
            if pv is None or t <= pt:
                return None
            x = abs(v - pv) * S / (t - pt)
        else:
            assert isinstance(d, Deviation)
            sp = d.setpoint if d.setpoint is not None else self.setpoint
            if sp is None:
                return None  # no setpoint read yet
            x = abs(v - sp)
        return x > d.limit - d.deadband if self.cond else x > d.limit

    # -- debounce -------------------------------------------------------------
    def update(self, value: Any, bad: bool, t: int, arrival: int) -> bool | None:
        """Feed one reading (time ``t``, arrived at clock time ``arrival``); returns the
        new ``active`` when it changed, else None."""
        if t <= self.last_t and self.watch_order:
            self.ignored += 1
            return None
        self.last_t = t
        self.last_arrival = arrival
        self.value = value
        hit = self.test(value, bad, t)
        if hit is None:
            return self._settle(t)
        if hit is not self.cond:
            self.cond = hit
            self.since = t
        return self._settle(t)

    def poll(self, now: int) -> bool | None:
        """Advance the timers to clock time ``now`` without a reading."""
        d = self.defn
        if isinstance(d, Stale):
            if not self.active and now - self.last_arrival >= d.for_s * S:
                self.cond = self.active = True
                self.since = self.at = self.stream_time(now)
                return True
            return None
        if self.cond is self.active:
            return None
        return self._settle(self.stream_time(now))

    def stream_time(self, now: int) -> int:
        """The stream's time at clock time ``now`` (its last reading's time moved on by
        the clock since that reading arrived)."""
        return self.last_t + max(0, now - self.last_arrival)

    def _settle(self, t: int) -> bool | None:
        if self.cond is self.active:
            return None
        d = self.defn
        if self.cond:
            delay = d.on_delay_s + (d.for_s if isinstance(d, BadQuality) else 0.0)
        else:
            delay = d.off_delay_s
        if t - self.since >= delay * S:
            self.active = self.cond
            self.at = t
            return self.active
        return None
