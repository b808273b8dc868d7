"""Device write-back through a real ``otgate run``: the HTTP route and
``otgate write`` with role tokens (audited), the shadow, and a gateway
``kill -9`` between request and result that does not write twice. The
Modbus device is pymodbus' real server, run on its own thread so the test
can read its tables and write log while the gateway runs."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal
from peers.gateway import gateway_fixture, wait_for  # noqa: F401
from peers.tansu import tansu_fixture  # noqa: F401

from otgate.protocols.modbus.config import Table
from otgate.simulations.modbus_sim import (
    ModbusSimulator,
    ModbusTcpSimConfig,
    SimDevice,
    run_modbus_tcp_simulator,
)

TOKENS = {"viewer": "v-token", "operator": "o-token", "engineer": "e-token"}
SCOPED = "line2-token"  # an engineer of other assets


@pytest.fixture(name="device")
def device_fixture() -> Iterator[ModbusSimulator]:
    cfg = ModbusTcpSimConfig(devices=[SimDevice(unit_id=1)], update_interval=3600.0)
    handle: list[ModbusSimulator] = []
    with start_blocking_portal() as portal:
        future, _ = portal.start_task(partial(run_modbus_tcp_simulator, cfg, handle=handle))
        yield handle[0]
        future.cancel()


def config(port: int, log: str = "") -> str:
    tokens = ", ".join(
        f'{{ token = "{t}", role = "{r}", name = "{r}-1" }}' for r, t in TOKENS.items()
    )
    tokens += f', {{ token = "{SCOPED}", role = "engineer", name = "line2", assets = ["line-2-*"] }}'
    return f"""
[gateway]
id = "writes"
[status]
tokens = [{tokens}]
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 3.0
{log}
[[adapters]]
type = "modbus_tcp"
id = "plc1"
host = "127.0.0.1"
port = {port}
poll_interval = 0.1
timeout = 5.0
reconnect_min = 0.1
reconnect_max = 0.5
[[adapters.groups]]
unit_id = 1
asset_id = "press"
[[adapters.groups.points]]
parameter = "setpoint"
address = 10
type = "int16"
scale = 0.5
writable = true
write = {{ min = 0.0, max = 100.0 }}
[[adapters.groups.points]]
parameter = "pump_on"
address = 3
table = "coil"
type = "bool"
writable = true
write = {{ role = "operator" }}
[[adapters.groups.points]]
parameter = "temperature"
address = 0
"""


def post(gw, path: str, body: dict, token: str | None) -> tuple[int, dict | str]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        gw.url + path, data=json.dumps(body).encode(), method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, text


def session_metrics(gw) -> dict[str, float]:
    """The metrics of the Modbus session ``plc1`` from ``/health``."""

    def find(node: dict) -> dict | None:
        if node.get("id") == "plc1" and node["kind"] == "modbus_tcp":
            return node["metrics"]
        return next(filter(None, map(find, node.get("children", []))), None)

    return next(filter(None, map(find, gw.health()["components"])))


def otgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otgate.supervisors.cli", *args],
        capture_output=True, text=True, timeout=60,
    )


def test_write_route_cli_roles_audit_and_shadow(gateway, device, tmp_path: Path) -> None:
    store = device.store
    store.set_registers(1, Table.HOLDING, 0, [215])
    gw = gateway(config(device.port))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, what="ready")
    route = "/points/press/setpoint/write"

    assert gw.get("/points/writable")[0] == 401
    points = gw.get("/points/writable", TOKENS["operator"])[1]["points"]
    assert [(p["parameter"], p["role"], p["min"], p["max"], p["can_write"]) for p in points] == [
        ("pump_on", "operator", None, None, True),
        ("setpoint", "engineer", 0.0, 100.0, False),
    ]
    assert gw.get("/points/writable", SCOPED)[1]["points"] == []  # not its assets
    assert gw.get("/assets/press/shadow", SCOPED)[0] == 403

    assert post(gw, route, {"value": 40}, None)[0] == 401
    code, doc = post(gw, route, {"value": 40}, TOKENS["operator"])
    assert (code, doc["status"]) == (403, "REJECTED") and "needs engineer" in doc["detail"]
    code, doc = post(gw, route, {"value": 140}, TOKENS["engineer"])
    assert (code, doc["status"]) == (422, "REJECTED") and "above max 100" in doc["detail"]
    assert post(gw, "/points/press/temperature/write", {"value": 1}, TOKENS["engineer"])[0] == 404
    assert list(store.writes) == []  # nothing refused reached the device

    code, doc = post(gw, route, {"value": 42.5, "wait_s": 20}, TOKENS["engineer"])
    assert (code, doc["status"], doc["read_back"]) == (200, "WRITTEN", 42.5), doc
    assert store.tables[1][Table.HOLDING][10] == 85  # 42.5 / scale 0.5
    assert gw.get(f"/commands/{doc['request_id']}", TOKENS["viewer"])[1]["status"] == "WRITTEN"

    cli = otgate("write", "press", "pump_on", "true", "--wait", "--url", gw.url,
                 "--token", TOKENS["operator"])
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert cli.stdout.startswith("WRITTEN press/pump_on = True (read back True)")
    assert store.tables[1][Table.COIL][3] == 1
    cli = otgate("write", "press", "pump_on", "false", "--url", gw.url,
                 "--token", TOKENS["viewer"])
    assert cli.returncode == 1 and cli.stdout.startswith("REJECTED: role viewer")
    # the root's nudge woke the session's runner through its bulkhead (a write found by
    # the runner's idle look instead has no nudge step)
    # (/health carries the metrics the bulkhead last reported: wait for both writes in them)
    metrics = wait_for(lambda: (m := session_metrics(gw)).get("writes_written", 0) >= 2 and m,
                       what="both writes in the session's metrics")
    assert metrics.get("writes_ms_nudge", 0) > 0

    shadow = wait_for(
        lambda: (d := gw.get("/assets/press/shadow", TOKENS["viewer"])[1])["reported"].get("setpoint") and d,
        what="a reported setpoint",
    )
    assert shadow["desired"]["setpoint"]["value"] == 42.5
    assert shadow["desired"]["setpoint"]["status"] == "WRITTEN"
    assert shadow["reported"]["setpoint"]["value"] == 42.5
    assert shadow["delta"] == {}
    assert gw.get("/assets/press/shadow")[0] == 401  # operator reads need a token
    assert gw.get(f"/commands/{doc['request_id']}")[0] == 401
    store.set_registers(1, Table.HOLDING, 10, [20])  # someone changes it at the panel
    wait_for(
        lambda: gw.get("/assets/press/shadow", TOKENS["viewer"])[1]["delta"] == {"setpoint": 42.5},
        what="the delta",
    )

    audit = otgate("log", "read", "logs.audit", "--config", str(gw.config), "--json")
    rows = [json.loads(line) for line in audit.stdout.splitlines()]
    seen = {(r["who"], r["action"], r["result"], r["surface"]) for r in rows}
    assert ("operator-1", "point.write", "refused", "http") in seen
    assert ("engineer-1", "point.write", "ok", "http") in seen
    assert ("operator-1", "point.write", "ok", "cli") in seen
    assert ("viewer-1", "point.write", "refused", "cli") in seen


def test_write_on_the_kafka_backend(gateway, device, tansu) -> None:
    log = (
        f'[log]\nbackend = "kafka"\nbootstrap_servers = ["{tansu.bootstrap}"]\n'
        "idempotence = false\n"
    )
    gw = gateway(config(device.port, log))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, what="ready")
    code, doc = post(gw, "/points/press/setpoint/write", {"value": 10, "wait_s": 30},
                     TOKENS["engineer"])
    assert (code, doc["status"], doc["read_back"]) == (200, "WRITTEN", 10.0), doc
    assert gw.get(f"/commands/{doc['request_id']}", TOKENS["viewer"])[1]["status"] == "WRITTEN"
    assert [w[3] for w in device.store.writes] == [[20]]


def test_kill_9_between_request_and_result_does_not_write_twice(gateway, device) -> None:
    store = device.store
    gw = gateway(config(device.port))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, what="ready")
    code, doc = post(gw, "/points/press/setpoint/write", {"value": 10, "wait_s": 20},
                     TOKENS["engineer"])
    assert (code, doc["status"]) == (200, "WRITTEN"), doc
    # the device applies the write at once but answers 3 s later: the gateway dies first
    store.faults.slow_reply_s, store.faults.slow_probability = 3.0, 1.0
    code, doc = post(gw, "/points/press/setpoint/write", {"value": 30}, TOKENS["engineer"])
    assert code == 202, doc
    rid = doc["request_id"]
    wait_for(lambda: len(store.writes) == 2, what="the write at the device")
    gw.kill()
    store.faults.slow_probability = 0.0
    gw.start()
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, what="ready again")

    def final() -> dict | None:
        view = gw.get(f"/commands/{rid}", TOKENS["viewer"])[1]
        return view if isinstance(view, dict) and view["final"] else None

    res = wait_for(final, 30, what="the first request's result")
    assert res["status"] == "TIMED_OUT" and "restarted during this write" in res["detail"]
    code, doc = post(gw, "/points/press/setpoint/write", {"value": 31, "wait_s": 20},
                     TOKENS["engineer"])
    assert (code, doc["status"]) == (200, "WRITTEN"), doc
    assert [w[3] for w in store.writes] == [[20], [60], [62]]  # x2 at scale 0.5, once each
