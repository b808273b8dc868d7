"""The alarm state machine, conditions and health on a fake clock (no I/O)."""

from __future__ import annotations

import msgspec
import pytest

from otgate.actors.alarms.config import AlarmsConfig, HealthLimits
from otgate.actors.alarms.evaluator import Evaluator
from otgate.actors.alarms.health import AlarmHealth
from otgate.actors.processing import ProcessingConfig
from otgate.actors.records import Alarm, AlarmAction, AlarmCommand, AlarmState

S = 1_000_000_000
T0 = 1_700_000_000 * S
N, AU, AA, CU = (AlarmState.NORMAL, AlarmState.ACTIVE_UNACKED, AlarmState.ACTIVE_ACKED,
                 AlarmState.CLEARED_UNACKED)


class Plant:
    """An evaluator, a fake clock and the journal it wrote."""

    def __init__(self, *definitions: dict, **options) -> None:
        self.cfg = msgspec.convert({"definitions": list(definitions), **options}, AlarmsConfig)
        self.ev = Evaluator(self.cfg)
        self.now = T0
        self.journal: list[Alarm] = []
        self.ev.start(self.now)
        self.n = 0

    def feed(self, t: float, value, *, parameter="temp", asset="oven", bad=False,
             raw=False) -> list[Alarm]:
        """A reading at device time T0 + t seconds; the clock moves there too."""
        self.now = max(self.now, T0 + round(t * S))
        out: list[Alarm] = []
        for b in self.ev.bindings(asset, parameter, raw, "degC", self.now):
            self.ev.reading(b, value, bad, T0 + round(t * S), self.now, out)
        self.journal += out
        return out

    def tick(self, t: float) -> list[Alarm]:
        self.now = T0 + round(t * S)
        out: list[Alarm] = []
        self.ev.tick(self.now, out)
        self.journal += out
        return out

    def cmd(self, action: AlarmAction, *ids: str, request_id: str = "", **kw) -> list[Alarm]:
        self.n += 1
        c = AlarmCommand(request_id=request_id or f"r{self.n}", action=action,
                         alarm_ids=list(ids), by="ana", role="operator", source="127.0.0.1",
                         gateway_time=self.now, **kw)
        out: list[Alarm] = []
        self.ev.command(c, self.now, out)
        self.journal += out
        return out

    def state(self, aid: str = "oven:temp:hi") -> AlarmState:
        return self.ev.entries[aid].state


HI = {"kind": "high", "name": "hi", "parameter": "temp", "limit": 100.0}


def moves(recs: list[Alarm]) -> list[tuple[str, AlarmState, AlarmState]]:
    return [(r.event, r.previous_state, r.state) for r in recs]


# -- one test per state transition ----------------------------------------------
def test_normal_to_active_unacked_on_raise() -> None:
    p = Plant(HI)
    assert p.feed(0, 90.0) == []
    [r] = p.feed(1, 101.0)
    assert moves([r]) == [("raise", N, AU)]
    assert (r.alarm_id, r.seq, r.value, r.limit, r.active, r.acked) == (
        "oven:temp:hi", 1, 101.0, 100.0, True, False)
    assert r.occurrence_id and r.device_time == T0 + S and r.by == "evaluator"
    assert r.message == "oven temp: hi (101.0)"


def test_active_unacked_to_active_acked_on_ack_with_audit() -> None:
    p = Plant(HI)
    p.feed(0, 101.0)
    [r] = p.cmd(AlarmAction.ACK, "oven:temp:hi", note="seen", request_id="req-1")
    assert moves([r]) == [("ack", AU, AA)]
    assert (r.by, r.role, r.source, r.note, r.request_id, r.seq) == (
        "ana", "operator", "127.0.0.1", "seen", "req-1", 2)
    assert r.ack_time == p.now


def test_active_acked_to_normal_on_clear() -> None:
    p = Plant(HI)
    raised = p.feed(0, 101.0)[0]
    p.cmd(AlarmAction.ACK, "oven:temp:hi")
    [r] = p.feed(1, 99.0)
    assert moves([r]) == [("clear", AA, N)] and r.occurrence_id == raised.occurrence_id


def test_active_unacked_to_rtn_unacked_then_normal_on_ack() -> None:
    p = Plant(HI)
    p.feed(0, 101.0)
    assert moves(p.feed(1, 99.0)) == [("clear", AU, CU)]
    assert moves(p.cmd(AlarmAction.ACK, "oven:temp:hi")) == [("ack", CU, N)]


def test_a_new_activation_gets_a_new_occurrence() -> None:
    p = Plant(HI)
    first = p.feed(0, 101.0)[0]
    p.feed(1, 99.0)
    second = p.feed(2, 102.0)[0]
    assert moves([second]) == [("raise", CU, AU)]
    assert second.occurrence_id != first.occurrence_id and second.seq == 3


def test_shelve_hides_and_expires_by_itself() -> None:
    p = Plant(HI)
    p.feed(0, 101.0)
    [r] = p.cmd(AlarmAction.SHELVE, "oven:temp:hi", duration_s=30.0)
    assert moves([r]) == [("shelve", AU, AlarmState.SHELVED)]
    assert r.shelved_until == T0 + 30 * S
    assert p.tick(29) == []
    [r] = p.tick(30)
    assert moves([r]) == [("shelve_expired", AlarmState.SHELVED, AU)] and r.by == "evaluator"


def test_shelve_is_capped_and_unshelve_returns_early() -> None:
    p = Plant(HI, max_shelve_s=60.0, default_shelve_s=10.0)
    p.feed(0, 101.0)
    assert p.cmd(AlarmAction.SHELVE, "oven:temp:hi", duration_s=3600.0)[0].shelved_until == \
        T0 + 60 * S
    assert moves(p.cmd(AlarmAction.UNSHELVE, "oven:temp:hi")) == [
        ("unshelve", AlarmState.SHELVED, AU)]
    assert p.tick(61) == []


def test_condition_is_followed_while_shelved() -> None:
    p = Plant(HI)
    p.feed(0, 90.0)
    p.cmd(AlarmAction.SHELVE, "oven:temp:hi", duration_s=30.0)
    [r] = p.feed(1, 101.0)
    assert (r.event, r.state, r.active) == ("raise", AlarmState.SHELVED, True)
    assert moves(p.tick(31)) == [("shelve_expired", AlarmState.SHELVED, AU)]


def test_operator_suppress_and_unsuppress() -> None:
    p = Plant(HI)
    p.feed(0, 101.0)
    assert moves(p.cmd(AlarmAction.SUPPRESS, "oven:temp:hi")) == [
        ("suppress", AU, AlarmState.SUPPRESSED)]
    assert moves(p.cmd(AlarmAction.UNSUPPRESS, "oven:temp:hi")) == [
        ("unsuppress", AlarmState.SUPPRESSED, AU)]


def test_out_of_service_and_back() -> None:
    p = Plant(HI)
    p.feed(0, 101.0)
    assert moves(p.cmd(AlarmAction.OUT_OF_SERVICE, "oven:temp:hi")) == [
        ("out_of_service", AU, AlarmState.OUT_OF_SERVICE)]
    [r] = p.cmd(AlarmAction.SHELVE, "oven:temp:hi")
    assert (r.event, r.note, r.seq) == ("refused:shelve", "out of service", 2)
    assert moves(p.cmd(AlarmAction.RETURN_TO_SERVICE, "oven:temp:hi")) == [
        ("return_to_service", AlarmState.OUT_OF_SERVICE, AU)]


def test_latched_alarm_stays_active_until_reset() -> None:
    p = Plant({**HI, "latching": True})
    p.feed(0, 101.0)
    [r] = p.cmd(AlarmAction.RESET, "oven:temp:hi")
    assert (r.event, r.note) == ("refused:reset", "condition still active")
    [r] = p.feed(1, 50.0)
    assert (r.event, r.state, r.active, r.latched) == ("clear", AU, False, True)
    p.cmd(AlarmAction.ACK, "oven:temp:hi")
    assert p.state() is AA
    assert moves(p.cmd(AlarmAction.RESET, "oven:temp:hi")) == [("reset", AA, N)]


def test_ack_of_many_refuses_what_does_not_apply_and_skips_a_repeated_request() -> None:
    p = Plant(HI, {"kind": "low", "name": "lo", "parameter": "temp", "limit": 0.0})
    p.feed(0, 101.0)
    out = p.cmd(AlarmAction.ACK, "oven:temp:hi", "oven:temp:lo", "nope", request_id="x")
    assert [(r.alarm_id, r.event, r.note) for r in out] == [
        ("oven:temp:hi", "ack", ""), ("oven:temp:lo", "refused:ack", "already acknowledged")]
    assert out[1].seq == p.ev.entries["oven:temp:lo"].seq  # an answer, not a transition
    assert p.ev.refused == 2  # "nope" is unknown: logged and counted, not journalled
    assert p.cmd(AlarmAction.ACK, "oven:temp:hi", request_id="x") == []
    assert p.ev.duplicates == 1


def test_an_action_meant_for_an_activation_that_is_over_is_refused() -> None:
    # An ack sent while the alarm cleared and was raised again must not acknowledge
    # the new activation (the harness's alarms scenario acked #3 with "ack-#1").
    p = Plant(HI)
    aid = "oven:temp:hi"
    first = p.feed(0, 101.0)[0]
    p.feed(1, 99.0)
    second = p.feed(2, 102.0)[0]
    [r] = p.cmd(AlarmAction.ACK, aid, occurrence_ids={aid: first.occurrence_id})
    assert (r.event, r.seq, r.note) == (
        "refused:ack", 3, f"activation {first.occurrence_id} is over (now {second.occurrence_id})")
    assert p.state() is AU
    [r] = p.cmd(AlarmAction.ACK, aid, occurrence_ids={aid: second.occurrence_id})
    assert moves([r]) == [("ack", AU, AA)] and r.occurrence_id == second.occurrence_id


# -- conditions ---------------------------------------------------------------------
def test_deadband_keeps_the_alarm_until_the_value_is_back_past_it() -> None:
    p = Plant({**HI, "deadband": 5.0})
    p.feed(0, 101.0)
    assert p.feed(1, 99.0) == [] and p.feed(2, 95.5) == []
    assert [r.event for r in p.feed(3, 95.0)] == ["clear"]
    assert p.feed(4, 100.0) == []  # re-raise needs the limit again
    assert [r.event for r in p.feed(5, 100.5)] == ["raise"]


def test_on_delay_needs_the_condition_to_hold() -> None:
    p = Plant({**HI, "on_delay_s": 5.0})
    assert p.feed(0, 101.0) == [] and p.feed(3, 102.0) == []
    p.feed(4, 99.0)  # dropped below: the delay starts again
    assert p.feed(6, 101.0) == [] and p.feed(10, 101.0) == []
    [r] = p.feed(11, 101.0)
    assert r.event == "raise" and r.device_time == T0 + 11 * S


def test_on_delay_runs_out_without_new_data_on_the_tick() -> None:
    p = Plant({**HI, "on_delay_s": 5.0})
    p.feed(0, 101.0)
    assert p.tick(4.9) == []
    [r] = p.tick(5.0)
    assert r.event == "raise" and r.device_time == T0 + 5 * S


def test_off_delay_needs_the_condition_to_stay_clear() -> None:
    p = Plant({**HI, "off_delay_s": 10.0})
    p.feed(0, 101.0)
    assert p.feed(1, 90.0) == [] and p.feed(5, 101.0) == []  # back: no clear
    assert p.feed(6, 90.0) == [] and p.feed(15, 90.0) == []
    assert [r.event for r in p.feed(16, 90.0)] == ["clear"]


def test_low_deviation_rate_and_bit_conditions() -> None:
    p = Plant(
        {"kind": "low_low", "name": "ll", "parameter": "level", "limit": 10.0, "deadband": 1.0},
        {"kind": "deviation", "name": "dev", "parameter": "speed", "setpoint": 1450.0,
         "limit": 50.0},
        {"kind": "rate", "name": "roc", "parameter": "press", "limit": 2.0},
        {"kind": "boolean", "name": "trip", "parameter": "status", "bit": 1},
    )
    ev = lambda recs: [(r.definition, r.event) for r in recs]  # noqa: E731
    assert ev(p.feed(0, 9.0, parameter="level")) == [("ll", "raise")]
    assert ev(p.feed(1, 10.5, parameter="level")) == []
    assert ev(p.feed(2, 11.0, parameter="level")) == [("ll", "clear")]
    assert ev(p.feed(0, 1390.0, parameter="speed")) == [("dev", "raise")]
    assert ev(p.feed(0, 4.0, parameter="press")) == []
    assert ev(p.feed(1, 5.0, parameter="press")) == []
    assert ev(p.feed(1.5, 7.0, parameter="press")) == [("roc", "raise")]  # 4 per s
    assert ev(p.feed(0, 1, parameter="status")) == []  # bit 0 only
    assert ev(p.feed(1, 3, parameter="status")) == [("trip", "raise")]


def test_deviation_from_a_setpoint_parameter_of_the_same_asset() -> None:
    p = Plant({"kind": "deviation", "name": "dev", "parameter": "temp",
               "setpoint_parameter": "temp_sp", "limit": 5.0, "deadband": 1.0})
    assert p.feed(0, 150.0) == []  # no setpoint read yet: nothing to judge against
    p.feed(1, 148.0, parameter="temp_sp")
    p.feed(1, 140.0, parameter="temp_sp", asset="other-oven")  # another asset's setpoint
    assert p.feed(2, 150.0) == []
    p.feed(3, 160.0, parameter="temp_sp")  # the operator raises the setpoint
    [r] = p.feed(4, 150.0)
    assert (r.alarm_id, r.event, r.limit) == ("oven:temp:dev", "raise", 5.0)
    assert p.feed(5, 155.5) == []  # within the limit, not yet past the deadband
    assert [r.event for r in p.feed(6, 156.0)] == ["clear"]


def test_bad_quality_for_n_seconds_and_stale() -> None:
    p = Plant(
        {"kind": "bad_quality", "name": "badq", "parameter": "temp", "for_s": 10.0},
        {"kind": "stale", "name": "silent", "asset": "oven", "parameter": "temp", "for_s": 30.0},
    )
    assert p.feed(0, None, bad=True) == [] and p.tick(9.9) == []
    assert [r.definition for r in p.tick(10)] == ["badq"]
    assert [r.event for r in p.feed(11, 20.0)] == ["clear"]
    assert [(r.definition, r.event) for r in p.tick(41.5)] == [("silent", "raise")]
    assert [(r.definition, r.event) for r in p.feed(42, 20.0)] == [("silent", "clear")]


def test_a_stale_alarm_of_a_named_stream_runs_from_the_start() -> None:
    p = Plant({"kind": "stale", "name": "silent", "asset": "oven", "parameter": "temp",
               "for_s": 30.0})
    assert [r.alarm_id for r in p.tick(31)] == ["oven:temp:silent"]


def test_unmatched_raw_readings_make_a_device_alarm() -> None:
    p = Plant()
    assert [(r.alarm_id, r.event) for r in p.feed(0, True, parameter="trip", raw=True)] == [
        ("oven:trip:device", "raise")]
    assert p.feed(1, True, parameter="other") == []  # telemetry: no definition, nothing
    q = Plant(unmatched_raw="ignore")
    assert q.feed(0, True, parameter="trip", raw=True) == []


def test_suppression_by_design_follows_the_parent() -> None:
    p = Plant(
        {"kind": "boolean", "name": "trip", "parameter": "trip"},
        {"kind": "low", "name": "lo", "parameter": "press", "limit": 2.0,
         "suppressed_by": ["trip"]},
    )
    p.feed(0, 3.0, parameter="press")
    p.feed(0, False, parameter="trip")
    p.feed(1, True, parameter="trip")  # the lo alarm has no journal yet: flips silently
    [r] = p.feed(2, 0.5, parameter="press")
    assert (r.event, r.state, r.active) == ("raise", AlarmState.SUPPRESSED, True)
    [r] = p.feed(3, False, parameter="trip")[1:]
    assert (r.event, r.by, r.state) == ("unsuppress", "evaluator", AU)
    assert "oven:trip:trip" in r.note
    [r] = p.feed(4, True, parameter="trip")[1:]
    assert (r.event, r.previous_state, r.state) == ("suppress", AU, AlarmState.SUPPRESSED)


def test_duplicate_and_older_readings_change_nothing() -> None:
    p = Plant(HI)
    p.feed(0, 101.0)
    p.feed(1, 99.0)
    assert p.feed(0, 101.0) == [] and p.feed(1, 99.0) == []  # an at-least-once replay
    assert p.ev.bindings_by_id["oven:temp:hi"].condition.ignored == 2


def test_restore_keeps_acks_and_raises_nothing_twice_on_replay() -> None:
    p = Plant(HI)
    p.feed(0, 101.0)
    p.cmd(AlarmAction.ACK, "oven:temp:hi", request_id="ack-1")
    p.feed(1, 99.0)
    p.feed(2, 101.0)
    p.cmd(AlarmAction.SHELVE, "oven:temp:hi", duration_s=60.0, request_id="sh-1")
    q = Plant(HI)
    q.ev.restore(p.journal, q.now)
    e = q.ev.entries["oven:temp:hi"]
    assert (e.state, e.seq, e.active, e.acked) == (AlarmState.SHELVED, 5, True, False)
    for t, v in [(0, 101.0), (1, 99.0), (2, 101.0)]:  # the uncommitted batch again
        assert q.feed(t, v) == []
    assert q.cmd(AlarmAction.ACK, "oven:temp:hi", request_id="ack-1") == []
    assert [r.event for r in q.feed(3, 99.0)] == ["clear"]
    assert q.journal[-1].seq == 6
    assert moves(q.tick(62)) == [("shelve_expired", AlarmState.SHELVED, CU)]


# -- health -------------------------------------------------------------------------
def test_flood_detection_raises_a_gateway_event_and_ends() -> None:
    h = AlarmHealth(HealthLimits(flood_alarms=10, flood_window_s=600.0))
    p = Plant(*[{**HI, "name": f"hi{i}", "asset": f"a{i}"} for i in range(11)])
    events = []
    for i in range(11):
        events += h.observe(p.feed(i, 101.0, asset=f"a{i}"), p.now)
    assert [e.kind for e in events] == ["alarm_flood"]
    assert events[0].fields["new_alarms"] == "11"
    m = h.metrics(p.ev.entries.values(), p.now)
    assert m["alarm_flood"] == 1.0 and m["alarm_rate_10min"] == 11.0
    assert m["alarms_active_unacked"] == 11.0 and m["alarms_standing_medium"] == 11.0
    assert [e.kind for e in h.tick(p.now + 600 * S)] == ["alarm_flood_ended"]
    assert h.metrics(p.ev.entries.values(), p.now + 600 * S)["alarm_flood"] == 0.0


def test_chattering_stale_and_shelved_too_long() -> None:
    h = AlarmHealth(HealthLimits(chatter_count=3, chatter_window_s=60.0, stale_after_s=100.0,
                                 shelved_too_long_s=50.0))
    p = Plant(HI, {**HI, "name": "hi2", "parameter": "temp2"})
    for i in range(3):
        h.observe(p.feed(10 * i, 101.0), p.now)
        h.observe(p.feed(10 * i + 5, 99.0), p.now)
    m = h.metrics(p.ev.entries.values(), p.now)
    assert m["alarms_chattering"] == 1.0 and m["chatter_episodes_total"] == 1.0
    h.observe(p.feed(30, 101.0, parameter="temp2"), p.now)
    p.cmd(AlarmAction.SHELVE, "oven:temp:hi", duration_s=3600.0)
    h.tick(T0 + 200 * S)
    m = h.metrics(p.ev.entries.values(), T0 + 200 * S)
    assert m["alarms_chattering"] == 0.0
    assert m["alarms_stale"] == 1.0 and m["alarms_shelved_too_long"] == 1.0


# -- config ---------------------------------------------------------------------------
@pytest.mark.parametrize("alarms, error", [
    ({"definitions": [HI, HI]}, "definitions[1].name: 'hi' is already used by definitions[0]"),
    ({"definitions": [{**HI, "suppressed_by": ["nope"]}]},
     "definitions[0].suppressed_by[0]: no other definition is named 'nope'"),
    ({"definitions": [{**HI, "message": "{asset} {bogus}"}]},
     "definitions[0].message: unknown field(s) ['bogus']"),
    ({"definitions": [{**HI, "severity": "URGENT"}]}, "definitions[0].severity"),
    ({"definitions": [{"kind": "high", "name": "x", "parameter": "p"}]},
     "missing required field `limit`"),
    ({"definitions": [{**HI, "kind": "spike"}]}, "kind"),
    ({"inputs": ["telemetry.1s"]}, "inputs[0]: 'telemetry.1s' is not a topic of readings"),
    ({"definitions": [{"kind": "deviation", "name": "d", "parameter": "p", "limit": 1.0}]},
     "definition 'd': set one of setpoint, setpoint_parameter - at `$.alarms.definitions[0]`"),
])
def test_bad_definitions_are_refused_with_their_path(alarms, error) -> None:
    with pytest.raises(msgspec.ValidationError) as exc:
        msgspec.convert({"alarms": alarms}, ProcessingConfig)
    assert error in str(exc.value)
