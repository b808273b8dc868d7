"""The alarm scenario's checker: the transitions the devices' samples call for,
against the alarm journal (``alarms.clean``) and against the webhook.

Journal, per alarm: ``seq`` runs 1..n with no gap and no repeat; every raise and
clear the device's acknowledged samples call for is there exactly once
(``journal_lost`` / ``journal_duplicates``); every activation has exactly one
ack, made by the acker's request ``ack-<occurrence_id>`` of that activation
(an ack landing on another activation is a problem). An activation the acker
never saw unacknowledged (it came and went while the gateway was down) is
counted in ``acks_unseen`` and not expected: the operator never asked (an ack
applies to the alarm's current activation, so a past one cannot be acked). An
ack the evaluator refused because the alarm had been raised again before it
arrived ("activation ... is over") is counted in ``acks_too_late``, not expected.

Webhook, counted by ``Idempotency-Key`` (``alarm_id:seq``): every notifying
transition of the journal (with ``dedupe_window = "0s"`` and HIGH severity:
raise, ack, clear) must be accepted at least once (``webhook_lost`` counts
distinct keys never accepted). ``webhook_resent`` counts every acceptance of
a key beyond its first. A resend is the at-least-once contract working, and
the receiver's to drop by its key, when the router had no confirmation of the
earlier acceptance: its answer never reached the router (``replied`` false:
the router timed out first), or the router's process was killed (gateway
kill -9, or a kill of the router's bulkhead) before it could checkpoint that
send: within ``window_s`` after the acceptance (the router checkpoints right
after the flush that sent it, and a flush waits at most the webhook timeout).
Any other resend followed a delivery the router had confirmed and recorded,
and is a ``webhook_duplicates``.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field
from typing import Any

from otgate.simulations.harness.alarm_peers import (
    AckAnswer,
    Acker,
    AlarmDevice,
    Delivery,
    alarm_id,
)

NOTIFYING = frozenset({"raise", "ack", "clear"})


@dataclass
class AlarmReport:
    """The alarm counts of one run; ``problems`` says what failed."""

    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def transitions(rows: list[dict[str, Any]], ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """The journal's transitions per alarm, in log order (the evaluator's
    ``refused:<action>`` answers are no transitions)."""
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for r in rows:
        if r.get("alarm_id") in ids and not str(r.get("event", "")).startswith("refused:"):
            out[r["alarm_id"]].append(r)
    return out


def check_journal(dev: AlarmDevice, recs: list[dict[str, Any]], acker: Acker,
                  rep: AlarmReport) -> None:
    c = rep.counts
    aid = alarm_id(dev.id)
    want_raises, want_clears = dev.edges()
    seqs = collections.Counter(r["seq"] for r in recs)
    repeats = sum(n - 1 for n in seqs.values())
    gaps = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
    if repeats:
        rep.problems.append(f"{aid}: {repeats} journal records repeat a seq")
    if gaps:
        rep.problems.append(f"{aid}: seq gaps {gaps[:10]}")
    events = collections.Counter(r["event"] for r in recs)
    other = set(events) - NOTIFYING
    if other:
        rep.problems.append(f"{aid}: unexpected events {sorted(other)}")
    occurrences = [r["occurrence_id"] for r in recs if r["event"] == "raise"]
    acks = collections.Counter(r["occurrence_id"] for r in recs if r["event"] == "ack")
    lost = max(0, want_raises - events["raise"]) + max(0, want_clears - events["clear"])
    dups = max(0, events["raise"] - want_raises) + max(0, events["clear"] - want_clears)
    dups += sum(n - 1 for n in acks.values())
    for r in recs:
        if r["event"] == "ack" and r["request_id"] != f"ack-{r['occurrence_id']}":
            rep.problems.append(f"{aid}: ack request {r['request_id']!r} applied to "
                                f"{r['occurrence_id']} (seq {r['seq']})")
    unseen = late = 0
    for occ in occurrences:
        if occ in acks:
            continue
        answer = acker.answers.get(occ)
        if occ not in acker.seen:
            unseen += 1
        elif answer is not None and _too_late(answer, aid):
            late += 1
        elif answer is not None:
            lost += 1
            rep.problems.append(f"{occ}: the acker's ack was answered {answer.status} "
                                f"{answer.refused or ''}, no ack in the journal")
        else:
            rep.problems.append(f"{occ}: the acker's ack was never answered "
                                f"({acker.attempts.get(occ, 0)} attempts)")
    if lost:
        rep.problems.append(f"{aid}: {lost} transitions lost (raises {events['raise']} of "
                            f"{want_raises}, clears {events['clear']} of {want_clears})")
    if dups:
        rep.problems.append(f"{aid}: {dups} duplicate transitions")
    if recs and not unseen and recs[-1]["state"] != "NORMAL":
        rep.problems.append(f"{aid}: ends {recs[-1]['state']} (expected NORMAL)")
    expected = want_raises + want_clears + want_raises - unseen - late  # an ack each, in time
    for k, v in (("expected", expected), ("raises", events["raise"]),
                 ("acks", events["ack"]), ("clears", events["clear"]), ("acks_unseen", unseen),
                 ("acks_too_late", late),
                 ("journal_lost", lost), ("journal_duplicates", dups + repeats)):
        c[k] = c.get(k, 0) + v


def _too_late(answer: AckAnswer, aid: str) -> bool:
    """The evaluator refused the ack because the alarm was raised again first (or the
    new activation was acknowledged already: nothing to change)."""
    return answer.status == "unchanged" or (
        answer.status == "refused" and "is over" in answer.refused.get(aid, ""))


def check_webhook(keys: set[str], deliveries: list[Delivery], kills: list[float],
                  rep: AlarmReport, window_s: float) -> None:
    """``keys``: the journal's notifying transitions; ``kills``: monotonic times the
    router's process was killed; ``window_s``: how long after a confirmed send the
    router may still be without the checkpoint that records it."""
    by_key: dict[str, list[Delivery]] = collections.defaultdict(list)
    for d in sorted(deliveries, key=lambda d: d.at):  # logged when answered: a slow one late
        by_key[d.key].append(d)
    unknown = set(by_key) - keys
    if unknown:
        rep.problems.append(f"webhook: keys not in the journal {sorted(unknown)[:5]}")
    lost = sorted(keys - set(by_key))
    if lost:
        rep.problems.append(f"webhook: never delivered {lost[:10]}")
    resent = dups = 0
    for key, ds in by_key.items():
        for before, again in itertools.pairwise(ds):
            resent += 1
            last = min(again.at, before.at + window_s)
            if before.replied and not any(before.at <= k <= last for k in kills):
                dups += 1
                near = min(kills, key=lambda k: abs(k - before.at), default=None)
                rep.problems.append(
                    f"webhook: {key} delivered again {again.at - before.at:.1f}s after a "
                    "confirmed delivery" + ("" if near is None else
                                            f" (nearest router kill {near - before.at:+.1f}s)"))
    rep.counts.update(webhook_delivered=len(keys & set(by_key)), webhook_lost=len(lost),
                      webhook_duplicates=dups, webhook_resent=resent)


def check_alarms(devices: list[AlarmDevice], rows: list[dict[str, Any]], acker: Acker,
                 deliveries: list[Delivery], kills: list[float], window_s: float = 0.0
                 ) -> AlarmReport:
    rep = AlarmReport(counts={"alarm_transitions": 0})
    journal = transitions(rows, {alarm_id(d.id) for d in devices})
    for dev in devices:
        check_journal(dev, journal[alarm_id(dev.id)], acker, rep)
    keys = {f"{r['alarm_id']}:{r['seq']}" for recs in journal.values() for r in recs
            if r["event"] in NOTIFYING}
    rep.counts["alarm_transitions"] = sum(len(v) for v in journal.values())
    check_webhook(keys, deliveries, kills, rep, window_s)
    return rep


def settled(devices: list[AlarmDevice], rows: list[dict[str, Any]], acker: Acker,
            deliveries: list[Delivery]) -> bool:
    """Every acknowledged sample's transitions journalled, every ack the acker
    asked for answered, every notifying transition at the webhook."""
    journal = transitions(rows, {alarm_id(d.id) for d in devices})
    for dev in devices:
        recs = journal[alarm_id(dev.id)]
        raises, clears = dev.edges()
        ev = collections.Counter(r["event"] for r in recs)
        if ev["raise"] < raises or ev["clear"] < clears:
            return False
        if raises and (not recs or recs[-1]["state"] != "NORMAL"):
            return False  # the last activation not cleared and acked yet
    if acker.pending():
        return False
    keys = {f"{r['alarm_id']}:{r['seq']}" for recs in journal.values() for r in recs
            if r["event"] in NOTIFYING}
    return keys <= {d.key for d in deliveries}
