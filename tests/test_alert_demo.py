"""The alert router inside a real ``otgate run``: its demo receivers (webhook, SMTP) are
simulator parts, the router a sink bulkhead; alarm transitions written to the
gateway's log are routed, and the receivers' lines show them in the output."""

from __future__ import annotations

import re

import anyio
from alarm_records import AlarmDriver
from peers.gateway import gateway_fixture, wait_for  # noqa: F401

from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.records import AlarmSeverity
from otgate.actors.stage_codec import LogCodec
from otgate.simulations.postgres_server import free_port

TOPIC = "alarms.clean"


def config(state: str, hook: int, smtp: int) -> str:
    return f"""
[gateway]
state_dir = "{state}"
[status]
listen = "127.0.0.1:0"
[[simulators]]
type = "webhook_receiver"
id = "sim-webhook"
server = {{ port = {hook} }}
[[simulators]]
type = "smtp_receiver"
id = "sim-smtp"
server = {{ port = {smtp} }}
[[sinks]]
type = "alert_router"
id = "alerts"
fetch_timeout_s = 0.1
digest_interval = "1s"
routes = [
  {{ severity = "CRITICAL", destinations = ["control-room"] }},
  {{ severity = "LOW", destinations = ["mail"] }},
]
[[sinks.destinations]]
type = "webhook"
id = "control-room"
url = "http://127.0.0.1:{hook}/control-room"
[[sinks.destinations]]
type = "email"
id = "mail"
host = "127.0.0.1"
port = {smtp}
tls = "none"
sender = "gw@plant.example"
recipients = ["oncall@plant.example"]
[[bulkheads]]
id = "alert-receivers"
members = ["sim-webhook", "sim-smtp"]
"""


async def write_alarms(path, alarms) -> None:
    lg = EmbeddedLog(path)
    await lg.start()
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        await codec.prepare([TOPIC])
        await lg.append(TOPIC, [(a.asset_id.encode(), codec.encode(TOPIC, a)) for a in alarms])
    finally:
        await lg.close()


def test_alarms_raised_acked_and_cleared_reach_the_demo_receivers(gateway, tmp_path):
    state = tmp_path / "state"
    gw = gateway(config(str(state), free_port(), free_port()))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, "the gateway ready")
    pump, tank = AlarmDriver("pump-1.high_pressure"), AlarmDriver(
        "tank-1.low_level", asset_id="tank-1", severity=AlarmSeverity.LOW)
    records = [pump.raise_(), tank.raise_(), pump.ack(), pump.clear()]
    anyio.run(write_alarms, state / "log.sqlite", records)
    want = [rf"webhook_received path=/control-room key=pump-1\.high_pressure:{s} duplicate=False"
            rf" text=CRITICAL {e}" for s, e in ((1, "raise"), (2, "ack"), (3, "clear"))]
    want.append(r"smtp_received to=oncall@plant\.example subject=\[otgate\] Digest: 1 LOW")
    wait_for(lambda: all(re.search(w, gw.log()) for w in want), 30, "the notifications")

    def router() -> dict:
        (node,) = [c for c in gw.component("alerts")["children"] if c["id"] == "sink.alerts"]
        return node

    # /health is refreshed by the bulkhead's heartbeat (every second)
    wait_for(lambda: router()["metrics"]["sent_total"] == 4.0, 10, "the router's counters")
    assert router()["kind"] == "sink.alert_router"
    assert [c["kind"] for c in router()["children"]] == ["circuit_breaker"] * 2
