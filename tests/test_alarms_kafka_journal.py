"""The alarm journal on the Kafka backend (tansu): the evaluator killed -9 rebuilds
its table from the journal on the broker — once with no checkpoint at all (the
whole journal, read by a group that never commits, after the broker assigned
it its partitions) and once from the checkpoint plus the journal since — and
no transition is lost or repeated, and the acknowledgement is kept."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path

import anyio
import msgspec
from alarm_records import send_command
from peers.gateway import gateway_fixture, wait_for  # noqa: F401
from peers.tansu import tansu_fixture  # noqa: F401

from otgate.actors.log.cmd import read_rows
from otgate.actors.log.config import LogConfig
from otgate.actors.records import AlarmAction

CONFIG = """
[gateway]
id = "alarms-kafka"
state_dir = "{state}"
[log]
backend = "kafka"
bootstrap_servers = ["{bootstrap}"]
idempotence = false  # tansu 0.6 cannot InitProducerId v1+
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 3.0
gateway = {{ intensity = 10, period = 60.0, backoff_initial = 1.0, backoff_max = 1.0, jitter = 0.0 }}

[[adapters]]
type = "synthetic"
id = "plc"
asset_id = "press-1"
interval = 0.05
points = [
  {{ parameter = "trip", classification = "ALARM", signal = {{ kind = "toggle", on_s = 0.4, off_s = 0.4 }} }},
  {{ parameter = "pressure", signal = {{ kind = "constant", value = 9.0 }} }},
]

[processing.aggregator]
enabled = false
[processing.alarms]
tick_s = 0.1
checkpoint_interval_s = 0.5
definitions = [
  {{ kind = "boolean", name = "trip", parameter = "trip", severity = "CRITICAL" }},
  {{ kind = "high", name = "overpressure", parameter = "pressure", limit = 8.0 }},
]
"""
TRIP = "press-1:trip:trip"
STANDING = "press-1:pressure:overpressure"


class Journal:
    """``alarms.clean`` on the broker, read in-process as ``otgate log read`` reads it."""

    def __init__(self, bootstrap: str, state: Path) -> None:
        self.cfg = msgspec.convert({"backend": "kafka", "bootstrap_servers": [bootstrap],
                                    "idempotence": False}, LogConfig)
        self.state = state

    def read(self) -> list[dict]:
        try:
            return anyio.run(read_rows, self.cfg, self.state, "alarms.clean", 0, 100_000)
        except SystemExit:  # no topic yet: the gateway has not created it
            return []

    def transitions(self, aid: str = TRIP) -> list[dict]:
        return [r for r in self.read() if r["alarm_id"] == aid]

    def ack(self) -> None:
        """The evaluator's input, written as the status endpoint writes it."""
        send_command(self.state, AlarmAction.ACK, STANDING, "ack-1", self.cfg)


def test_evaluator_rebuilds_from_the_journal_on_kafka(gateway, tansu, tmp_path) -> None:
    state = tmp_path / "state"
    gw = gateway(CONFIG.format(state=state, bootstrap=tansu.bootstrap))
    journal = Journal(tansu.bootstrap, state)
    transitions = journal.transitions
    wait_for(lambda: len(transitions()) >= 4, 90, "trip transitions on the broker")
    wait_for(lambda: transitions(STANDING), 30, "the standing alarm")
    journal.ack()
    wait_for(lambda: len(transitions(STANDING)) == 2, 30, "the ack in the journal")
    for kill in range(2):
        before = len(transitions())
        pid = gw.component("processing")["pid"]
        os.kill(pid, signal.SIGKILL)
        if kill == 0:  # no checkpoint: the table comes from the whole journal
            for ckpt in state.rglob("*.ckpt"):
                ckpt.unlink()
        wait_for(lambda pid=pid: gw.component("processing")["pid"] not in (None, pid), 30,
                 "the processing bulkhead back")
        wait_for(lambda before=before: len(transitions()) >= before + 4, 60,
                 "transitions after the restart")
    assert gw.stop() == 0
    by_alarm: dict[str, list[dict]] = {}
    for r in journal.read():
        by_alarm.setdefault(r["alarm_id"], []).append(r)
    for aid, rs in by_alarm.items():  # one journal, in order, nothing twice or missing
        assert [r["seq"] for r in rs] == list(range(1, len(rs) + 1)), aid
    trip = [r["event"] for r in by_alarm[TRIP]]
    assert trip[:2] == ["raise", "clear"] and all(a != b for a, b in itertools.pairwise(trip))
    # raised once, acknowledged once, never raised again by a restart
    assert [(r["event"], r["state"]) for r in by_alarm[STANDING]] == [
        ("raise", "ACTIVE_UNACKED"), ("ack", "ACTIVE_ACKED")]
    assert gw.log().count("alarms_recovered") >= 3
    assert "checkpoint=no" in gw.log()
