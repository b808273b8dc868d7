"""Issue 8 end to end on a real ``otgate run``: a Modbus device's value crosses a
limit, the evaluator raises the alarm on ``alarms.clean``, the operator table
(HTTP and CLI) shows it, an operator acks it through ``otgate alarms ack`` and
gets the applied transition back, a viewer is refused (403, nothing changed,
audited), the value returns, a shelve expires by itself, ``/metrics`` follows,
and the alert router delivers each notifying transition to a webhook exactly once.

The Modbus server and the webhook receiver are real peers served from this test's
own event loop (a blocking portal thread); the test sets the register.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from peers.gateway import gateway_fixture, wait_for  # noqa: F401

from otgate.actors.log.config import LogConfig
from otgate.actors.records import AlarmAction, AlarmCommand, now_ns
from otgate.protocols.modbus.config import Table
from otgate.simulations.alert_receivers import WebhookReceiver
from otgate.simulations.alert_receivers_config import WebhookReceiverConfig
from otgate.simulations.modbus_sim import (
    ModbusSimulator,
    ModbusTcpSimConfig,
    SimDevice,
    run_modbus_tcp_simulator,
)
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.tail import scan

ALARM = "boiler-1:temp:hot"
CONFIG = """
[gateway]
id = "alarms-e2e"
state_dir = "{state}"
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 2.0
[status]
tokens = [
  {{ token = "view-tok", role = "viewer", name = "vic" }},
  {{ token = "oper-tok", role = "operator", name = "olga" }},
]
[[adapters]]
type = "modbus_tcp"
id = "plc"
host = "127.0.0.1"
port = {modbus}
poll_interval = 0.1
timeout = 0.5
[[adapters.groups]]
unit_id = 1
asset_id = "boiler-1"
points = [{{ parameter = "temp", address = 1, type = "uint16" }}]
[processing.aggregator]
enabled = false
[processing.alarms]
tick_s = 0.1
definitions = [
  {{ kind = "high", name = "hot", parameter = "temp", limit = 80.0, severity = "HIGH" }},
]
[[sinks]]
type = "alert_router"
id = "alerts"
fetch_timeout_s = 0.1
dedupe_window = "0s"
routes = [{{ severity = "HIGH", destinations = ["control-room"] }}]
[[sinks.destinations]]
type = "webhook"
id = "control-room"
url = "{hook}/control-room"
"""


class Peers:
    """The Modbus device and the webhook receiver, served in a portal thread."""

    def __init__(self, portal: BlockingPortal) -> None:
        self.portal = portal
        self.hook = WebhookReceiver()
        handle: list[ModbusSimulator] = []
        cfg = ModbusTcpSimConfig(devices=[SimDevice(unit_id=1)], update_interval=3600.0)
        _, self.modbus_port = portal.start_task(partial(run_modbus_tcp_simulator, cfg,
                                                        handle=handle))
        self.sim = handle[0]
        _, self.hook_url = portal.start_task(self.hook.serve, WebhookReceiverConfig(port=0))

    def set_temp(self, value: int) -> None:
        self.portal.call(self.sim.store.set_registers, 1, Table.HOLDING, 1, [value])


@pytest.fixture(name="peers")
def peers_fixture() -> Iterator[Peers]:
    """Requested before ``gateway``: the gateway stops before its peers do."""
    with start_blocking_portal() as portal:
        peers = Peers(portal)
        yield peers
        portal.call(portal.stop, True)  # cancel the servers


def otgate(gw, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OTGATE_STATUS_URL": gw.url, "OTGATE_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "otgate.supervisors.cli", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def get(gw, path: str, token: str) -> tuple[int, dict]:
    req = urllib.request.Request(gw.url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode()}


def read_topic(state, topic: str) -> list:
    async def run() -> list:
        oplog = OperatorLog(LogConfig(), state)
        try:
            return [obj async for _rec, obj in scan(oplog, topic)]
        finally:
            await oplog.close()

    return anyio.run(run)


def journal(state, answers: bool = False) -> list[tuple[int, str, str]]:
    """The alarm's transitions; with ``answers`` also the evaluator's refusals."""
    return [(a.seq, a.event, a.state.value) for a in read_topic(state, "alarms.clean")
            if a.alarm_id == ALARM and (answers or not a.event.startswith("refused"))]


def late_ack(state) -> None:
    """An ack command for the alarm, written as another surface's would be."""

    async def run() -> None:
        oplog = OperatorLog(LogConfig(), state)
        try:
            await oplog.append("alarms.commands", "late", AlarmCommand(
                request_id="late", action=AlarmAction.ACK, alarm_ids=[ALARM], by="ana",
                role="operator", source="http:127.0.0.1", gateway_time=now_ns()))
        finally:
            await oplog.close()

    anyio.run(run)


def state_of(gw) -> str:
    rows = {a["alarm_id"]: a for a in get(gw, "/alarms", "view-tok")[1].get("alarms", [])}
    return rows[ALARM]["state"] if ALARM in rows else ""


def gauge(gw, name: str) -> str:
    line = f'{name}{{severity="HIGH"}} '
    text = gw.get("/metrics")[1]
    return next((x[len(line):] for x in text.splitlines() if x.startswith(line)), "")


def test_alarm_raise_ack_clear_shelve_refusal_metrics_and_delivery(peers, gateway, tmp_path):
    state = tmp_path / "state"
    peers.set_temp(20)
    gw = gateway(CONFIG.format(state=state, modbus=peers.modbus_port, hook=peers.hook_url))
    wait_for(gw.ready, 60, "the gateway ready")

    # The value crosses the limit: raised on alarms.clean, shown by GET /alarms and /metrics.
    peers.set_temp(95)
    wait_for(lambda: (1, "raise", "ACTIVE_UNACKED") in journal(state), 30, "the raise")
    status, doc = get(gw, "/alarms?state=active_unacked", "view-tok")
    assert status == 200 and [(a["alarm_id"], a["value"], a["limit"]) for a in doc["alarms"]] \
        == [(ALARM, 95, 80.0)]
    wait_for(lambda: gauge(gw, "otgate_alarms_unacknowledged") == "1.0", 20, "unacked gauge")
    assert gauge(gw, "otgate_alarms_active") == "1.0"

    # A viewer may look, not ack: 403 on both faces, nothing written, the refusal audited.
    res = otgate(gw, "alarms", "ack", ALARM, "--note", "mine", token="view-tok")
    assert res.returncode == 3 and "needs operator" in res.stderr, res.stderr
    assert gw.post("/alarms/ack", {"alarm_ids": [ALARM]}, token="view-tok")[0] == 403
    assert read_topic(state, "alarms.commands") == [] and state_of(gw) == "ACTIVE_UNACKED"
    audit = [(a.who, a.action, a.result) for a in read_topic(state, "logs.audit")]
    assert audit.count(("vic", "alarms.ack", "refused")) == 2

    # The operator's ack is applied by the evaluator; the CLI returns the transition.
    res = otgate(gw, "alarms", "ack", ALARM, "--note", "checked on site", "--json",
                 token="oper-tok")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"] == "applied", doc
    (t,) = doc["transitions"]
    assert (t["seq"], t["event"], t["previous_state"], t["state"]) == (
        2, "ack", "ACTIVE_UNACKED", "ACTIVE_ACKED")
    assert (t["by"], t["role"], t["note"]) == ("olga", "operator", "checked on site")
    assert t["source"].startswith("cli") and t["request_id"] == doc["request_id"]
    wait_for(lambda: gauge(gw, "otgate_alarms_unacknowledged") == "0.0", 20, "acked gauge")
    assert gauge(gw, "otgate_alarms_active") == "1.0"

    # A second ack racing the first (another console, written before the first applied) is
    # refused by the evaluator: that answer is not a transition, and not "applied".
    late_ack(state)
    wait_for(lambda: (2, "refused:ack", "ACTIVE_ACKED") in journal(state, True), 20, "refusal")
    status, doc = gw.post("/alarms/ack", {"alarm_ids": [ALARM], "request_id": "late"},
                          token="oper-tok")
    assert (status, doc["status"], doc["transitions"]) == (200, "refused", []), doc
    assert doc["refused"] == {ALARM: "already acknowledged"}
    row = get(gw, f"/alarms/{ALARM}", "view-tok")[1]["alarm"]
    assert (row["seq"], row["event"], row["by"]) == (2, "ack", "olga")

    # The value returns: NORMAL.
    peers.set_temp(30)
    wait_for(lambda: state_of(gw) == "NORMAL", 30, "NORMAL after the clear")
    wait_for(lambda: gauge(gw, "otgate_alarms_active") == "0.0", 20, "active gauge")

    # Raised again and shelved for 2 s: hidden, then back by itself (still active).
    peers.set_temp(99)
    wait_for(lambda: state_of(gw) == "ACTIVE_UNACKED", 30, "the second raise")
    # An ack bound to the first activation (a console that saw #1) acks nothing now.
    first, now = f"{ALARM}#1", f"{ALARM}#4"
    status, doc = gw.post("/alarms/ack", {"alarm_ids": [ALARM], "occurrence_ids": {ALARM: first}},
                          token="oper-tok")
    assert (status, doc["status"], doc["refused"]) == (
        200, "refused", {ALARM: f"activation {first} is over (now {now})"}), doc
    assert gw.post("/alarms/ack", {"alarm_ids": [ALARM], "occurrence_ids": [first]},
                   token="oper-tok")[0] == 400
    res = otgate(gw, "alarms", "shelve", ALARM, "--for", "2s", "--json", token="oper-tok")
    assert res.returncode == 0 and json.loads(res.stdout)["status"] == "applied", res.stderr
    assert state_of(gw) == "SHELVED"
    wait_for(lambda: (6, "shelve_expired", "ACTIVE_UNACKED") in journal(state), 20,
             "the shelve to expire")
    peers.set_temp(25)
    wait_for(lambda: state_of(gw) == "CLEARED_UNACKED", 30, "the clear, unacknowledged")
    res = otgate(gw, "alarms", "ack", ALARM, token="oper-tok")
    assert res.returncode == 0 and "ack applied" in res.stdout, res.stdout + res.stderr
    assert "CLEARED_UNACKED -> NORMAL" in res.stdout

    assert journal(state) == [
        (1, "raise", "ACTIVE_UNACKED"), (2, "ack", "ACTIVE_ACKED"), (3, "clear", "NORMAL"),
        (4, "raise", "ACTIVE_UNACKED"), (5, "shelve", "SHELVED"),
        (6, "shelve_expired", "ACTIVE_UNACKED"), (7, "clear", "CLEARED_UNACKED"),
        (8, "ack", "NORMAL"),
    ]
    # Every notifying transition reached the webhook once (the shelve notifies nobody).
    want = {f"{ALARM}:{s}": 1 for s in (1, 2, 3, 4, 6, 7, 8)}
    wait_for(lambda: dict(peers.hook.keys) == want, 30, f"deliveries {want}")
    assert peers.hook.duplicates() == 0
    events = [(d["key"], d["alarms"][0]["event"]) for d in peers.hook.received]
    assert [e for _, e in sorted(events, key=lambda x: int(x[0].rsplit(":", 1)[1]))] == [
        "raise", "ack", "clear", "raise", "shelve_expired", "clear", "ack"]
    audit = [(a.who, a.action, a.result) for a in read_topic(state, "logs.audit")]
    assert audit.count(("olga", "alarms.ack", "ok")) == 4  # the late ack asked about once
    assert audit.count(("olga", "alarms.shelve", "ok")) == 1
    assert gw.stop() == 0
