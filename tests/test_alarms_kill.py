"""The alarm evaluator killed -9 mid-stream inside a real gateway: after the
processing bulkhead restarts, no transition is lost or repeated and the
acknowledgement made before the kill is kept.

A kill lands between "transitions appended" and "offsets committed" only by
luck (the window is a few ms), so while the killed bulkhead waits out its
restart backoff the test moves the processing groups' committed offsets back
by about a second of input: the restarted stages then replay what they had
already journalled, as a process killed in that window would (and the
validator writes those clean readings a second time).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import anyio
import psutil
from alarm_records import send_command
from peers.gateway import gateway_fixture, wait_for  # noqa: F401

from otgate.actors.log.embedded import EmbeddedLog, UnknownTopic
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.records import AlarmAction, AlarmState
from otgate.actors.stage_codec import LogCodec, decode

CONFIG = """
[gateway]
id = "alarms-kill"
state_dir = "{state}"
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 2.0
gateway = {{ intensity = 10, period = 60.0, backoff_initial = 1.5, backoff_max = 1.5, jitter = 0.0 }}

[[adapters]]
type = "synthetic"
id = "plc"
asset_id = "press-1"
interval = 0.05
points = [
  {{ parameter = "trip", classification = "ALARM", signal = {{ kind = "toggle", on_s = 0.3, off_s = 0.3 }} }},
  {{ parameter = "temp", signal = {{ kind = "sine", offset = 100.0, amplitude = 10.0, period_s = 0.8 }} }},
  {{ parameter = "pressure", signal = {{ kind = "constant", value = 9.0 }} }},
]

[processing.aggregator]
enabled = false
[processing.alarms]
tick_s = 0.1
checkpoint_interval_s = 0.5   # the restarts read the checkpoint, then the journal since
definitions = [
  {{ kind = "boolean", name = "trip", parameter = "trip", severity = "CRITICAL" }},
  {{ kind = "high", name = "hot", parameter = "temp", limit = 105.0 }},
  {{ kind = "high", name = "overpressure", parameter = "pressure", limit = 8.0 }},
]
"""
STANDING = "press-1:pressure:overpressure"


def read_topic(state: Path, topic: str) -> list:
    """Every record of a topic, read by this test process from the gateway's log file."""

    async def go() -> list:
        lg = EmbeddedLog(state / "log.sqlite")
        await lg.start()
        try:
            codec = LogCodec(EmbeddedSchemaStore(lg))
            c = lg.consumer(f"test-{time.monotonic_ns()}", [topic])
            out = []
            try:
                while recs := await c.fetch(10_000, 0.05):
                    out += [await decode(codec, topic, r.value) for r in recs]
            except UnknownTopic:
                pass  # the gateway has not created its topics yet
            await c.close()
            return out
        finally:
            await lg.close()

    return anyio.run(go)


def find(node: dict, cid: str) -> dict | None:
    if node["id"] == cid:
        return node
    for child in node.get("children", []):
        if (found := find(child, cid)) is not None:
            return found
    return None


def rewind(state: Path, records: int) -> None:
    """Move the processing stages' committed offsets back (see module doc)."""
    con = sqlite3.connect(state / "log.sqlite", timeout=10)
    try:
        with con:
            n = con.execute("UPDATE group_offsets SET offset = MAX(offset - ?, 0)"
                            " WHERE grp IN ('alarms', 'validator')", (records,)).rowcount
        assert n >= 3
    finally:
        con.close()


def expected(readings: list, test) -> list[tuple[str, int]]:
    """(raise|clear, device_time) as the readings dictate (no delays, no deadband)."""
    out, active = [], False
    for r in sorted(readings, key=lambda r: r.device_time):
        hit = test(r.value)
        if hit is not active:
            out.append(("raise" if hit else "clear", r.device_time))
            active = hit
    return out


def journal(state: Path) -> list:
    return read_topic(state, "alarms.clean")


def count(state: Path, aid: str = "press-1:trip:trip") -> int:
    return sum(1 for r in journal(state) if r.alarm_id == aid and r.event in ("raise", "clear"))


def ack_the_standing_alarm(state: Path) -> None:
    wait_for(lambda: count(state) >= 4, 40, "trip transitions")
    wait_for(lambda: any(r.alarm_id == STANDING for r in journal(state)), 10, "standing alarm")
    send_command(state, AlarmAction.ACK, STANDING, "ack-1")
    wait_for(lambda: any(r.request_id == "ack-1" for r in journal(state)), 10, "the ack")


def check_journal(state: Path) -> None:
    """Every transition once, in order, exactly as the readings dictate; the ack kept."""
    by_alarm: dict[str, list] = {}
    for r in journal(state):
        by_alarm.setdefault(r.alarm_id, []).append(r)
    for aid, rs in by_alarm.items():
        assert [r.seq for r in rs] == list(range(1, len(rs) + 1)), aid
    raw = [r for r in read_topic(state, "alarms.raw") if r.parameter == "trip"]
    temp = [r for r in read_topic(state, "telemetry.clean") if r.parameter == "temp"]
    for aid, readings, test in [("press-1:trip:trip", raw, bool),
                                ("press-1:temp:hot", temp, lambda v: v > 105.0)]:
        got = [(r.event, r.device_time) for r in by_alarm[aid]]
        want = expected(readings, test)
        assert got == want[:len(got)], aid  # nothing lost, nothing raised twice
        assert len(got) >= len(want) - 2, aid  # the tail read before the stop
    assert [(r.event, r.state) for r in by_alarm[STANDING]] == [
        ("raise", AlarmState.ACTIVE_UNACKED), ("ack", AlarmState.ACTIVE_ACKED)]


def test_evaluator_killed_mid_stream_loses_and_repeats_nothing(gateway, tmp_path) -> None:
    state = tmp_path / "state"
    gw = gateway(CONFIG.format(state=state))
    ack_the_standing_alarm(state)
    for kill in range(2):
        before = count(state)
        pid = gw.component("processing")["pid"]
        os.kill(pid, signal.SIGKILL)
        rewind(state, 40)
        wait_for(lambda pid=pid: gw.component("processing")["pid"] not in (None, pid), 30,
                 "the processing bulkhead back")
        if kill == 0:
            send_command(state, AlarmAction.ACK, STANDING, "ack-1")  # a retried request
        wait_for(lambda before=before: count(state) >= before + 4, 30,
                 "transitions after the restart")
    assert gw.component("processing")["restarts"] >= 2

    def evaluator_metrics() -> dict:
        node = find(gw.component("processing"), "alarms")
        return node["metrics"] if node and node["metrics"].get("consumed_total") else {}

    m = wait_for(evaluator_metrics, 10, "the evaluator's metrics in /health")
    assert m["readings_ignored_total"] > 0  # the replay was read, and ignored
    assert m["alarms_active_acked"] == 1.0 and m["journal_recovered"] > 0
    metrics = gw.get("/metrics")[1]
    assert 'otgate_component_metric{id="alarms",name="alarm_rate_10min",parent="processing"}' \
        in metrics
    gw.stop()
    check_journal(state)
    assert gw.log().count("alarms_recovered") >= 3


def test_gateway_killed_and_restarted_keeps_the_alarm_table(gateway, tmp_path) -> None:
    state = tmp_path / "state"
    gw = gateway(CONFIG.format(state=state))
    ack_the_standing_alarm(state)
    processing = psutil.Process(gw.component("processing")["pid"])
    before = count(state)
    gw.kill()  # the root, with SIGKILL: its bulkheads die with it (PR_SET_PDEATHSIG)
    processing.wait(10)
    rewind(state, 40)
    gw.start()
    send_command(state, AlarmAction.ACK, STANDING, "ack-1")  # a retried request
    wait_for(lambda: count(state) >= before + 4, 40, "transitions after the restart")
    gw.stop()
    check_journal(state)
    assert "alarms_recovered" in gw.log()
