"""The alarm table: definitions bound to streams, readings and commands in,
transitions out. Pure (no I/O): the actor feeds it and journals what it returns.

Hot path: most readings match no definition. ``bindings`` answers from a
dict keyed by (asset, parameter), filled on first sight of a stream, so an
unmatched reading costs one lookup (the actor skips such streams before
decoding, by their first bytes).

Restart: ``restore`` takes the checkpointed alarm states, then folds the
journal written since (``alarms.clean``, oldest first) into the table before
any input is read. Each alarm gets its last state and the
device time of its last raise/clear as its watermark: replayed readings not
newer than it change nothing (see ``conditions``), so a replay raises no alarm
twice and loses none. Every ``request_id`` in the journal counts as applied,
so a replayed command changes nothing.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

from otgate.actors.alarms.checkpoint import EntryState
from otgate.actors.alarms.conditions import Condition, number
from otgate.actors.alarms.config import (
    AlarmDefinition,
    AlarmsConfig,
    BadQuality,
    Boolean,
    Deviation,
    Stale,
    Unmatched,
)
from otgate.actors.alarms.machine import AlarmEntry, Refused, Who
from otgate.actors.records import Alarm, AlarmAction, AlarmCommand

log = logging.getLogger("otgate.alarms")
S = 1_000_000_000
APPLIED_MEMORY = 100_000
"""Request ids remembered (commands are replayed at most one batch back)."""
_PATTERN = frozenset("*?[")


def alarm_id(asset_id: str, parameter: str, name: str) -> str:
    return f"{asset_id}:{parameter}:{name}"


class SetpointFeed:
    """A stream that carries the setpoint of deviation alarms on its asset."""

    __slots__ = ("asset", "name")

    def __init__(self, asset: str, name: str) -> None:
        self.asset = asset
        self.name = name


class Binding:
    """One alarm on one stream: its entry and its condition."""

    __slots__ = ("condition", "entry")

    def __init__(self, entry: AlarmEntry, condition: Condition) -> None:
        self.entry = entry
        self.condition = condition


class Evaluator:
    """Alarm definitions applied to readings, commands and the clock (see module doc)."""

    def __init__(self, config: AlarmsConfig) -> None:
        self.config = config
        self.definitions = list(config.definitions)
        self.device = Boolean(name="device", parameter="*",
                              severity=config.device_alarm_severity,
                              message="{asset} {parameter}: device alarm")
        self.entries: dict[str, AlarmEntry] = {}
        self.bindings_by_id: dict[str, Binding] = {}
        self._streams: dict[tuple[str, str, bool], tuple[Binding | SetpointFeed, ...]] = {}
        self._by_asset_def: dict[tuple[str, str], list[AlarmEntry]] = defaultdict(list)
        self._children: dict[str, list[str]] = defaultdict(list)
        for d in self.definitions:
            for parent in d.suppressed_by:
                self._children[parent].append(d.name)
        self._setpoint_defs: dict[str, list[Deviation]] = defaultdict(list)
        for d in self.definitions:
            if isinstance(d, Deviation) and d.setpoint_parameter is not None:
                self._setpoint_defs[d.setpoint_parameter].append(d)
        self._setpoints: dict[tuple[str, str], float] = {}  # (asset, definition) -> setpoint
        self._timed: list[Binding] = []  # conditions that may change without a reading
        self.applied: OrderedDict[str, None] = OrderedDict()
        self.refused = 0
        self.duplicates = 0

    # -- streams ----------------------------------------------------------------
    def start(self, now: int) -> None:
        """Bind the stale alarms of exactly named streams (expected from the start)."""
        for d in self.definitions:
            if isinstance(d, Stale) and not (_PATTERN & set(d.asset + d.parameter)):
                self._bind(d, d.asset, d.parameter, "", now)

    def has_timers(self) -> bool:
        """Whether ``tick`` can change an alarm without a reading (stale, bad
        quality, on/off delays)."""
        return bool(self._timed)

    def bindings(self, asset: str, parameter: str, raw: bool, unit: str, now: int
                 ) -> tuple[Binding | SetpointFeed, ...]:
        """What a reading of this stream feeds (empty: nothing watches the stream)."""
        key = (asset, parameter, raw)
        found = self._streams.get(key)
        if found is None:
            defs = [d for d in self.definitions
                    if fnmatchcase(parameter, d.parameter) and fnmatchcase(asset, d.asset)]
            if not defs and raw and self.config.unmatched_raw is Unmatched.ALARM:
                defs = [self.device]
            feeds = [SetpointFeed(asset, d.name) for d in self._setpoint_defs.get(parameter, ())
                     if fnmatchcase(asset, d.asset)]
            found = self._streams[key] = (
                *(self._bind(d, asset, parameter, unit, now) for d in defs), *feeds)
        return found

    def _bind(self, d: AlarmDefinition, asset: str, parameter: str, unit: str, now: int
              ) -> Binding:
        aid = alarm_id(asset, parameter, d.name)
        b = self.bindings_by_id.get(aid)
        if b is not None:
            return b
        entry = self._entry(aid, d, asset, parameter)
        entry.unit = entry.unit or unit
        last_t = entry.data_time if entry.data_time is not None else -(1 << 62)
        cond = Condition(d, active=entry.active, last_t=last_t, arrival=now)
        cond.setpoint = self._setpoints.get((asset, d.name))
        b = self.bindings_by_id[aid] = Binding(entry, cond)
        if isinstance(d, Stale | BadQuality) or d.on_delay_s or d.off_delay_s:
            self._timed.append(b)
        for parent in d.suppressed_by:
            if any(e.standing for e in self._by_asset_def.get((asset, parent), ())):
                entry.design_suppressed = True
        return b

    # -- inputs -----------------------------------------------------------------
    def reading(self, binding: Binding | SetpointFeed, value: Any, bad: bool, t: int, now: int,
                out: list[Alarm]) -> None:
        """Feed one reading to one alarm (or setpoint); transitions go to ``out``."""
        if isinstance(binding, SetpointFeed):
            self._setpoint(binding, value, bad)
            return
        changed = binding.condition.update(value, bad, t, now)
        if changed is not None:
            self._move(binding, changed, now, out)

    def _setpoint(self, feed: SetpointFeed, value: Any, bad: bool) -> None:
        """A new setpoint: the next reading of the alarm's parameter is judged on it."""
        v = number(value)
        if v is None or bad:
            return
        self._setpoints[(feed.asset, feed.name)] = v
        for e in self._by_asset_def.get((feed.asset, feed.name), ()):
            b = self.bindings_by_id.get(e.alarm_id)
            if b is not None:
                b.condition.setpoint = v

    def tick(self, now: int, out: list[Alarm]) -> None:
        """Timers: delays and stale/bad-quality without new data, shelve expiry."""
        for b in self._timed:
            changed = b.condition.poll(now)
            if changed is not None:
                self._move(b, changed, now, out)
        for e in self.entries.values():
            if e.shelved_until is not None:
                rec = e.expire_shelve(now)
                if rec is not None:
                    out.append(rec)

    def _move(self, b: Binding, active: bool, now: int, out: list[Alarm]) -> None:
        e = b.entry
        standing = e.standing
        value, t = b.condition.value, b.condition.at
        rec = e.activate(value, t, now) if active else e.deactivate(value, t, now)
        if rec is not None:
            out.append(rec)
        if e.standing is not standing:
            self._parent_changed(e, now, out)

    def _parent_changed(self, parent: AlarmEntry, now: int, out: list[Alarm]) -> None:
        for child_def in self._children.get(parent.defn.name, ()):
            for child in self._by_asset_def.get((parent.asset_id, child_def), ()):
                on = any(e.standing for p in child.defn.suppressed_by
                         for e in self._by_asset_def.get((child.asset_id, p), ()))
                rec = child.set_design_suppressed(on, now, parent.alarm_id)
                if rec is not None:
                    out.append(rec)

    def command(self, cmd: AlarmCommand, now: int, out: list[Alarm]) -> bool:
        """Apply an operator command to each of its alarms; False when its request_id
        was applied before (then nothing is written). Each known alarm gets one
        record: the transition, or a ``refused:<action>`` answer with the reason in
        ``note``; an unknown alarm id gets none (no journal entry for an alarm that
        does not exist), only the ``alarm_command_refused`` log line."""
        if cmd.request_id in self.applied:
            self.duplicates += 1
            return False
        self.remember(cmd.request_id)
        who = Who.of(cmd)
        for aid in dict.fromkeys(cmd.alarm_ids):
            entry = self.entries.get(aid)
            event = cmd.action.value.lower()
            if entry is None:
                self._refuse(cmd, aid, "unknown alarm")
                continue
            try:
                want = cmd.occurrence_ids.get(aid)
                if want and want != entry.occurrence_id:
                    raise Refused(f"activation {want} is over (now {entry.occurrence_id})")
                out.append(self._apply(entry, cmd, who, now))
            except Refused as exc:
                self._refuse(cmd, aid, str(exc))
                out.append(entry.refused(str(exc), who, now, event))
                continue
            if cmd.action is AlarmAction.RESET:
                self._parent_changed(entry, now, out)
        return True

    def _refuse(self, cmd: AlarmCommand, aid: str, reason: str) -> None:
        self.refused += 1
        log.info("alarm_command_refused request_id=%s action=%s alarm_id=%s by=%s reason=%s",
                 cmd.request_id, cmd.action.value, aid, cmd.by, reason)

    def _apply(self, e: AlarmEntry, cmd: AlarmCommand, who: Who, now: int) -> Alarm:
        a = cmd.action
        if a is AlarmAction.ACK:
            return e.ack(who, now)
        if a is AlarmAction.SHELVE:
            want = cmd.duration_s if cmd.duration_s is not None else self.config.default_shelve_s
            if want <= 0:
                raise Refused("duration_s must be > 0")
            return e.shelve(now + int(min(want, self.config.max_shelve_s) * S), who, now)
        if a is AlarmAction.UNSHELVE:
            return e.unshelve(who, now)
        if a in (AlarmAction.SUPPRESS, AlarmAction.UNSUPPRESS):
            return e.suppress(a is AlarmAction.SUPPRESS, who, now)
        if a is AlarmAction.RESET:
            return e.reset(who, now)
        return e.set_out_of_service(a is AlarmAction.OUT_OF_SERVICE, who, now)

    def remember(self, request_id: str) -> None:
        """Count ``request_id`` as applied (the oldest are forgotten past APPLIED_MEMORY)."""
        if request_id:
            self.applied[request_id] = None
            if len(self.applied) > APPLIED_MEMORY:
                self.applied.popitem(last=False)

    # -- restart ----------------------------------------------------------------
    def restore(self, records: Iterable[Alarm], now: int,
                states: Iterable[EntryState] = ()) -> int:
        """Rebuild the table: checkpointed ``states`` first, then journalled
        transitions (oldest first; those the states already hold are skipped).
        Returns how many alarms it knows. Definitions that no longer exist are dropped."""
        by_name = {d.name: d for d in self.definitions}
        by_name.setdefault(self.device.name, self.device)
        for st in states:
            d = by_name.get(st.definition)
            if d is not None:
                st.apply(self._entry(st.alarm_id, d, st.asset_id, st.parameter))
        for rec in records:
            self.remember(rec.request_id)
            d = by_name.get(rec.definition)
            if d is not None and rec.seq > 0:
                self._entry(rec.alarm_id, d, rec.asset_id, rec.parameter).fold(rec)
        for e in list(self.entries.values()):  # watch them (stale timers run from now)
            self._bind(e.defn, e.asset_id, e.parameter, e.unit, now)
        for e in self.entries.values():  # design suppression follows the parents' state
            e.design_suppressed = any(p.standing for name in e.defn.suppressed_by
                                      for p in self._by_asset_def.get((e.asset_id, name), ()))
        return len(self.entries)

    def _entry(self, aid: str, d: AlarmDefinition, asset: str, parameter: str) -> AlarmEntry:
        e = self.entries.get(aid)
        if e is None:
            e = self.entries[aid] = AlarmEntry(aid, d, asset, parameter)
            self._by_asset_def[(asset, d.name)].append(e)
        return e
