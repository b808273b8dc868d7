"""The alert router's decisions (routes, replay, dedupe, digest, escalation) on a fake clock."""

from __future__ import annotations

import msgspec
import pytest
from alarm_records import AlarmDriver, router_config

from otgate.actors.records import AlarmSeverity
from otgate.config.load import ConfigError, decode
from otgate.sinks.alert_router.client import status_retriable
from otgate.sinks.alert_router.config import seconds
from otgate.sinks.alert_router.routing import RouterState, Routing, Source

T = 1_700_000_000.0


class Clock:
    def __init__(self, t: float = T) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def cfg(**kw):
    base = {
        "id": "alerts",
        "destinations": [
            {"type": "webhook", "id": "ops", "url": "http://127.0.0.1:1/hook"},
            {"type": "webhook", "id": "chat", "url": "http://127.0.0.1:1/slack",
             "format": "slack"},
            {"type": "email", "id": "oncall", "host": "127.0.0.1", "sender": "gw@plant",
             "recipients": ["oncall@plant"]},
        ],
        "routes": [
            {"severity": "CRITICAL", "destinations": ["ops", "chat"],
             "escalate_after": "10min", "escalate_to": ["oncall"]},
            {"severity": ["HIGH", "MEDIUM"], "assets": ["pump-*"], "destinations": ["chat"]},
            {"severity": ["LOW", "INFO"], "destinations": ["oncall"]},
            {"areas": ["south"], "destinations": ["ops"]},
        ],
    }
    base.update(kw)
    return router_config(**base)


def make(**kw) -> tuple[Routing, Clock]:
    clock = Clock()
    return Routing(cfg(**kw), RouterState(), clock), clock


_off = iter(range(1_000_000))


def src() -> Source:
    return Source("alarms.clean", 0, next(_off))


def dests(notices) -> list[tuple[str, str, str]]:
    return [(n.destination, n.kind, n.key) for n in notices]


def test_durations_and_config_errors_name_the_path():
    assert seconds("15min") == 900.0 and seconds("250ms") == 0.25 and seconds("2h") == 7200.0
    with pytest.raises(msgspec.ValidationError, match="no destination has the id 'nope'"):
        cfg(routes=[{"destinations": ["nope"]}])
    with pytest.raises(msgspec.ValidationError, match="escalate_after and escalate_to"):
        cfg(routes=[{"destinations": ["ops"], "escalate_after": "1min"}])
    with pytest.raises(msgspec.ValidationError, match="password"):
        cfg(destinations=[{"type": "email", "id": "m", "host": "h", "tls": "none",
                           "password": "x", "sender": "a@b", "recipients": ["c@d"]}])
    with pytest.raises(msgspec.ValidationError, match=r"Invalid enum value 'raised' - at `\$.events\[1\]`"):
        cfg(events=["ack", "raised"])
    with pytest.raises(msgspec.ValidationError, match="does not carry Alarm records"):
        cfg(topic="telemetry.clean")
    with pytest.raises(ConfigError) as info:
        decode({"sinks": [{"type": "alert_router", "id": "a", "routes": [],
                           "destinations": [], "digest_interval": "15 minutes"}]})
    assert "sinks[0].digest_interval" in str(info.value)


def test_webhook_status_classification_is_a_whitelist():
    assert all(status_retriable(s) for s in (408, 425, 429, 500, 502, 503, 504))
    assert not any(status_retriable(s) for s in (300, 400, 401, 403, 404, 413, 422))


def test_routes_by_severity_asset_and_area_with_one_key_per_transition():
    r, _ = make(dedupe_window="0s")
    crit = AlarmDriver("a1", severity=AlarmSeverity.CRITICAL)
    assert dests(r.accept(crit.raise_(), src())) == [
        ("ops", "transition", "a1:1"), ("chat", "transition", "a1:1")]
    high = AlarmDriver("a2", asset_id="pump-7", severity=AlarmSeverity.HIGH)
    assert dests(r.accept(high.raise_(), src())) == [("chat", "transition", "a2:1")]
    other = AlarmDriver("a3", asset_id="valve-1", severity=AlarmSeverity.HIGH)
    assert r.accept(other.raise_(), src()) == [] and r.counts["unrouted"] == 1
    south = AlarmDriver("a4", asset_id="valve-2", severity=AlarmSeverity.HIGH, area="south")
    assert dests(r.accept(south.raise_(), src())) == [("ops", "transition", "a4:1")]
    # ack and clear notify; the replayed raise (same seq) does not
    assert dests(r.accept(crit.ack(), src()))[0] == ("ops", "transition", "a1:2")
    assert r.accept(msgspec.structs.replace(crit.clear(), seq=1), src()) == []
    assert r.counts["replayed"] == 1
    assert len(r.state.outbox) == 6  # 2 + 1 + 1 + the ack to ops and chat


def test_shelved_and_suppressed_alarms_notify_nobody_until_they_return():
    r, _ = make(dedupe_window="0s")
    a = AlarmDriver("a1")
    r.accept(a.raise_(), src())
    assert r.accept(a.shelve(), src()) == []
    assert r.accept(a.suppress(), src()) == [] and r.counts["hidden"] == 2
    assert not r.state.escalations  # hiding cancels the escalation
    back = r.accept(a.unshelve(), src())  # back while active and unacked: like a raise
    assert [n.key for n in back] == ["a1:4", "a1:4"]
    assert r.state.escalations["a1"][0].key == "a1:4:escalation:0"


def test_dedupe_window_mutes_a_flapping_alarm_and_its_later_transitions():
    r, _ = make()  # 5 min default
    a = AlarmDriver("a1")
    assert len(r.accept(a.raise_(at=T), src())) == 2
    assert len(r.accept(a.clear(at=T + 10), src())) == 2
    assert r.accept(a.raise_(at=T + 60), src()) == []  # within 5 min of the last raise
    assert r.accept(a.ack(at=T + 61), src()) == []  # the same activation stays muted
    assert r.accept(a.clear(at=T + 62), src()) == []
    assert r.counts["deduped"] == 3
    assert len(r.accept(a.raise_(at=T + 301), src())) == 2  # window passed
    # another asset with the same alarm definition is another key
    b = AlarmDriver("b1", asset_id="pump-2")
    assert len(r.accept(b.raise_(at=T + 62), src())) == 2


def test_digest_collects_low_severities_into_one_message_per_destination():
    r, clock = make(digest_interval="15min")
    lows = [AlarmDriver(f"l{i}", severity=AlarmSeverity.LOW) for i in range(3)]
    info = AlarmDriver("i1", severity=AlarmSeverity.INFO)
    held = [src() for _ in range(5)]
    for d, s in zip([*lows, info], held, strict=False):
        assert r.accept(d.raise_(), s) == []
    assert r.accept(lows[0].clear(), held[4]) == []
    assert r.counts["digested"] == 5 and list(r.held()) == held
    clock.t += 899
    assert r.due() == []
    clock.t += 1
    (digest,) = r.due()
    assert (digest.destination, digest.kind, digest.key) == ("oncall", "digest", "digest:1")
    assert [a.alarm_id for a in digest.alarms] == ["l0", "l1", "l2", "i1", "l0"]
    assert digest.sources == held  # the commit stays before them until the mail is sent
    assert r.state.digest == [] and r.due() == []


def test_escalation_fires_once_when_unacked_and_is_cancelled_by_ack_or_clear():
    r, clock = make(dedupe_window="0s")
    slow, acked, cleared = AlarmDriver("s"), AlarmDriver("k"), AlarmDriver("c")
    for d in (slow, acked, cleared):
        r.accept(d.raise_(at=T), src())
    r.accept(acked.ack(at=T + 60), src())
    r.accept(cleared.clear(at=T + 120), src())
    clock.t = T + 599
    assert r.due() == []
    clock.t = T + 600
    (esc,) = r.due()
    assert (esc.destination, esc.kind, esc.key) == ("oncall", "escalation", "s:1:escalation:0")
    assert esc.alarms[0].alarm_id == "s"
    clock.t = T + 6000
    assert r.due() == [] and r.counts["escalated"] == 1


def test_state_round_trips_through_json_for_the_checkpoint():
    r, clock = make()
    a = AlarmDriver("a1")
    first = a.raise_(at=T)
    r.accept(first, src())
    r.accept(AlarmDriver("l", severity=AlarmSeverity.LOW).raise_(), src())
    raw = msgspec.json.encode(r.state)
    again = Routing(r.cfg, msgspec.json.decode(raw, type=RouterState), clock)
    clock.t = T + 600
    assert [n.key for n in again.due()] == ["a1:1:escalation:0"]
    assert len(again.state.digest) == 1 and len(again.state.outbox) == 3  # 2 + escalation
    assert again.accept(first, src()) == [] and again.counts["replayed"] == 1
