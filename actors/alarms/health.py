"""Alarm-system health as alarm management measures it (ISA-18.2 §16, EEMUA 191).

* alarm rate: new alarms (raises) in the last ``flood_window_s``, per 10 minutes;
* flood: more than ``flood_alarms`` new alarms in that window (starts and
  ends are returned as gateway events, for ``logs.gateway``);
* chattering: one alarm raised ``chatter_count`` times within
  ``chatter_window_s``;
* stale (standing): displayed active longer than ``stale_after_s``;
* shelved too long: shelved (re-shelving included) longer than
  ``shelved_too_long_s``.

Pure: fed with the transitions and the clock (integer ns).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from otgate.actors.alarms.config import HealthLimits
from otgate.actors.alarms.machine import AlarmEntry
from otgate.actors.records import Alarm, AlarmSeverity, AlarmState, GatewayEvent, Severity

S = 1_000_000_000


class AlarmHealth:
    """Counts raises over time; ``metrics`` reads the table too (see module doc)."""

    def __init__(self, limits: HealthLimits, source: str = "alarms") -> None:
        self.limits = limits
        self.source = source
        self.raises: deque[int] = deque()
        self.per_alarm: dict[str, deque[int]] = {}
        self.chattering: set[str] = set()
        self.flood = False
        self.floods = 0
        self.chatter_episodes = 0
        self.peak_rate = 0

    def export(self) -> dict[str, object]:
        """The raise times the windows still count (for the checkpoint)."""
        return {"raises": list(self.raises),
                "raises_per_alarm": {k: list(v) for k, v in self.per_alarm.items()}}

    def load(self, raises: list[int], per_alarm: dict[str, list[int]]) -> None:
        self.raises.extend(raises)
        for aid, times in per_alarm.items():
            self.per_alarm[aid] = deque(times, maxlen=self.limits.chatter_count)

    def observe(self, transitions: Iterable[Alarm], now: int) -> list[GatewayEvent]:
        """Count the raises among ``transitions``; returns a flood's start event."""
        lim = self.limits
        for rec in transitions:
            if rec.event != "raise":
                continue
            self.raises.append(now)
            times = self.per_alarm.get(rec.alarm_id)
            if times is None:
                times = self.per_alarm[rec.alarm_id] = deque(maxlen=lim.chatter_count)
            times.append(now)
            if (len(times) == lim.chatter_count and now - times[0] <= lim.chatter_window_s * S
                    and rec.alarm_id not in self.chattering):
                self.chattering.add(rec.alarm_id)
                self.chatter_episodes += 1
        return self._flood(now)

    def _flood(self, now: int) -> list[GatewayEvent]:
        lim = self.limits
        horizon = now - int(lim.flood_window_s * S)
        while self.raises and self.raises[0] <= horizon:
            self.raises.popleft()
        rate = len(self.raises)
        self.peak_rate = max(self.peak_rate, rate)
        flood = rate > lim.flood_alarms
        if flood is self.flood:
            return []
        self.flood = flood
        fields = {"new_alarms": str(rate), "window_s": f"{lim.flood_window_s:g}",
                  "limit": str(lim.flood_alarms)}
        if flood:
            self.floods += 1
            return [GatewayEvent(
                kind="alarm_flood", severity=Severity.MAJOR, source=self.source, fields=fields,
                message=f"alarm flood: {rate} new alarms in {lim.flood_window_s:g} s "
                        f"(more than {lim.flood_alarms})", gateway_time=now,
            )]
        return [GatewayEvent(
            kind="alarm_flood_ended", severity=Severity.INFO, source=self.source, fields=fields,
            message=f"alarm flood ended: {rate} new alarms in {lim.flood_window_s:g} s",
            gateway_time=now,
        )]

    def tick(self, now: int) -> list[GatewayEvent]:
        """Age the windows: a flood ends, chattering alarms calm down."""
        window = int(self.limits.chatter_window_s * S)
        for aid in [a for a in self.chattering if now - self.per_alarm[a][-1] > window]:
            self.chattering.discard(aid)
        return self._flood(now)

    def metrics(self, entries: Iterable[AlarmEntry], now: int) -> dict[str, float]:
        lim = self.limits
        counts = dict.fromkeys(AlarmState, 0)
        standing = stale = shelved_long = unacked = 0
        active_by_severity = dict.fromkeys((s.value.lower() for s in AlarmSeverity), 0)
        for e in entries:
            counts[e.state] += 1
            if not e.acked:
                unacked += 1
            if e.standing:
                standing += 1
                sev = e.defn.severity.value.lower()
                active_by_severity[sev] += 1
                if e.raised_time is not None and now - e.raised_time > lim.stale_after_s * S:
                    stale += 1
            if e.shelved_since is not None and now - e.shelved_since > lim.shelved_too_long_s * S:
                shelved_long += 1
        m = {f"alarms_{s.value.lower()}": float(n) for s, n in counts.items()}
        m.update({
            "alarms_standing": float(standing),
            "alarms_unacked": float(unacked),
            "alarm_rate_10min": len(self.raises) * 600.0 / lim.flood_window_s,
            "alarm_rate_peak_10min": self.peak_rate * 600.0 / lim.flood_window_s,
            "alarm_flood": 1.0 if self.flood else 0.0,
            "alarm_floods_total": float(self.floods),
            "alarms_chattering": float(len(self.chattering)),
            "chatter_episodes_total": float(self.chatter_episodes),
            "alarms_stale": float(stale),
            "alarms_shelved_too_long": float(shelved_long),
        })
        for sev, n in active_by_severity.items():
            m[f"alarms_standing_{sev}"] = float(n)
        return m
