"""What the alert router sends, and when: routes, dedupe, digests, escalations (no I/O).

``Routing.accept(alarm, source)`` takes one transition from ``alarms.clean``
and returns the notifications it causes now (also appended to the outbox);
``Routing.due(now)`` returns the ones timers cause (escalations, digests).
Everything it remembers is one ``RouterState`` Struct, which the actor
checkpoints, so timers survive a restart.

Rules, in order, for one transition:

1. A replay is dropped: ``seq`` not above the last seen for that ``alarm_id``
   (a record without ``seq``, 0, is never taken for a replay).
2. An ack, a clear or a move into SHELVED / SUPPRESSED / OUT_OF_SERVICE
   cancels the alarm's pending escalations; the latter three notify nobody.
3. ``raise`` (or a return from hiding while active and unacknowledged) is
   raise-like: it arms the escalations of its routes, due ``escalate_after``
   after the raise's ``gateway_time``, and is deduplicated: within
   ``dedupe_window`` of the last notified raise of the same (asset, alarm)
   it is muted together with every later transition of that activation.
   Other transitions notify when their ``event`` is in ``events``.
4. Digest severities (LOW, INFO by default) are collected per destination
   and sent as one message ``digest_interval`` after the first one;
   the rest become one notification per destination at once.

Times: dedupe and escalation deadlines use the record's ``gateway_time``, so
a replay decides as the live run did; ``now`` (wall-clock seconds from the
actor's injectable clock) only says which deadlines have passed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator

import msgspec

from otgate.actors.records import Alarm, AlarmState
from otgate.sinks.alert_router.config import AlertRouter, Route, seconds

HIDDEN = frozenset({AlarmState.SHELVED, AlarmState.SUPPRESSED, AlarmState.OUT_OF_SERVICE})
RETURNS = frozenset({"unshelve", "shelve_expired", "unsuppress", "return_to_service"})


class Source(msgspec.Struct, frozen=True, array_like=True):
    """Where a transition sits in the log (the router commits only past it once sent)."""

    topic: str
    partition: int
    offset: int


class Notice(msgspec.Struct, kw_only=True):
    """One message to one destination. ``key`` is its idempotency key: ``alarm_id:seq``
    for a transition, ``alarm_id:seq:escalation:<route>`` and ``digest:<n>``."""

    key: str
    destination: str
    kind: str  # "transition" | "escalation" | "digest"
    alarms: list[Alarm]
    sources: list[Source] = []


class Escalation(msgspec.Struct, kw_only=True):
    """A pending escalation of one raise on one route."""

    due: float
    key: str
    alarm: Alarm
    destinations: list[str]


class DigestItem(msgspec.Struct, kw_only=True):
    """One transition waiting for the next digest to one destination."""

    destination: str
    alarm: Alarm
    source: Source


class RouterState(msgspec.Struct, kw_only=True):
    """Everything the router remembers; checkpointed as JSON."""

    last_seq: dict[str, int] = {}
    last_raise: dict[str, float] = {}
    muted: dict[str, str] = {}
    escalations: dict[str, list[Escalation]] = {}
    digest: list[DigestItem] = []
    digest_due: float | None = None
    digests: int = 0
    outbox: list[Notice] = []


class Routing:
    """The router's decisions over a ``RouterState`` (see the module doc)."""

    def __init__(self, cfg: AlertRouter, state: RouterState, clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.state = state
        self.clock = clock
        self.window_s = seconds(cfg.dedupe_window)
        self.digest_s = seconds(cfg.digest_interval)
        self.digested = set(cfg.digest_severities)
        self.counts = {k: 0 for k in (
            "replayed", "hidden", "ignored", "unrouted", "deduped", "digested", "escalated",
            "notices",
        )}

    def routes(self, a: Alarm) -> Iterator[tuple[int, Route]]:
        for i, r in enumerate(self.cfg.routes):
            if r.severities and a.severity not in r.severities:
                continue
            if r.areas and a.area not in r.areas:
                continue
            if r.assets and not any(fnmatch.fnmatchcase(a.asset_id, p) for p in r.assets):
                continue
            yield i, r

    def accept(self, a: Alarm, source: Source) -> list[Notice]:
        """The notifications one transition causes now (see the module doc)."""
        st = self.state
        if a.seq:
            if a.seq <= st.last_seq.get(a.alarm_id, 0):
                self.counts["replayed"] += 1
                return []
            st.last_seq[a.alarm_id] = a.seq
        if a.state in HIDDEN or a.acked or not a.active:
            st.escalations.pop(a.alarm_id, None)
        if a.state in HIDDEN:
            self.counts["hidden"] += 1
            return []
        raise_like = a.event == "raise" or (a.event in RETURNS and a.active and not a.acked)
        if not raise_like and a.event not in self.cfg.events:
            self.counts["ignored"] += 1
            return []
        routes = list(self.routes(a))
        if not routes:
            self.counts["unrouted"] += 1
            return []
        t = a.gateway_time / 1e9
        if raise_like:
            self._arm(a, t, routes)
            if self._duplicate_raise(a, t):
                return []
        elif a.occurrence_id and st.muted.get(a.alarm_id) == a.occurrence_id:
            self.counts["deduped"] += 1
            return []
        dests = list(dict.fromkeys(d for _, r in routes for d in r.destinations))
        if a.severity in self.digested:
            st.digest += [DigestItem(destination=d, alarm=a, source=source) for d in dests]
            if st.digest_due is None:
                st.digest_due = self.clock() + self.digest_s
            self.counts["digested"] += 1
            return []
        key = f"{a.alarm_id}:{a.seq}"
        out = [Notice(key=key, destination=d, kind="transition", alarms=[a], sources=[source])
               for d in dests]
        return self._queue(out)

    def _arm(self, a: Alarm, t: float, routes: list[tuple[int, Route]]) -> None:
        for i, r in routes:
            if r.escalate_after is None:
                continue
            after = seconds(r.escalate_after)
            self.state.escalations.setdefault(a.alarm_id, []).append(Escalation(
                due=t + after, key=f"{a.alarm_id}:{a.seq}:escalation:{i}", alarm=a,
                destinations=list(r.escalate_to),
            ))

    def _duplicate_raise(self, a: Alarm, t: float) -> bool:
        st = self.state
        k = f"{a.asset_id}\x1f{a.alarm_id}"
        last = st.last_raise.get(k)
        if self.window_s > 0 and last is not None and 0 <= t - last < self.window_s:
            st.muted[a.alarm_id] = a.occurrence_id
            self.counts["deduped"] += 1
            return True
        st.last_raise[k] = t
        st.muted.pop(a.alarm_id, None)
        return False

    def due(self, now: float | None = None) -> list[Notice]:
        """The notifications whose time has come (escalations, the digest)."""
        st = self.state
        now = self.clock() if now is None else now
        out: list[Notice] = []
        for alarm_id in [k for k, v in st.escalations.items() if any(e.due <= now for e in v)]:
            keep = []
            for e in st.escalations[alarm_id]:
                if e.due > now:
                    keep.append(e)
                    continue
                self.counts["escalated"] += 1
                out += [Notice(key=e.key, destination=d, kind="escalation", alarms=[e.alarm])
                        for d in e.destinations]
            if keep:
                st.escalations[alarm_id] = keep
            else:
                del st.escalations[alarm_id]
        if st.digest and st.digest_due is not None and now >= st.digest_due:
            by_dest: dict[str, list[DigestItem]] = {}
            for item in st.digest:
                by_dest.setdefault(item.destination, []).append(item)
            st.digests += 1
            out += [Notice(key=f"digest:{st.digests}", destination=d, kind="digest",
                           alarms=[i.alarm for i in items], sources=[i.source for i in items])
                    for d, items in by_dest.items()]
            st.digest, st.digest_due = [], None
        if self.window_s > 0 and len(st.last_raise) > 1000:
            st.last_raise = {k: v for k, v in st.last_raise.items() if now - v < self.window_s}
        return self._queue(out)

    def _queue(self, notices: list[Notice]) -> list[Notice]:
        self.state.outbox += notices
        self.counts["notices"] += len(notices)
        return notices

    def held(self) -> Iterator[Source]:
        """Sources of transitions not yet sent everywhere (outbox and digest)."""
        for n in self.state.outbox:
            yield from n.sources
        for item in self.state.digest:
            yield item.source
