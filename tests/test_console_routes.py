"""The console's routes on a real ``otgate run``, without a browser: the page and
its assets, ``/whoami`` per role and scope, the live stream's token check, its
first message, its bound on open streams, and its end when the gateway stops."""

from __future__ import annotations

import json
import signal
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from peers.gateway import gateway_fixture, synthetic, wait_for  # noqa: F401

from otgate.config.load import decode
from otgate.supervisors.console.routes import MAX_STREAMS, simulated_parts

CONFIG = """
[gateway]
id = "console-routes"
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 2.0
[status]
tokens = [
  { token = "view-tok", role = "viewer", name = "vic" },
  { token = "oper-tok", role = "operator", name = "olga" },
  { token = "line-tok", role = "operator", name = "lena", assets = ["pump-*"] },
  { token = "eng-tok", role = "engineer", name = "erik" },
]
""" + synthetic("a", "pump-1")


def call(url: str, token: str = "") -> urllib.request.Request:
    headers = {"X-Otgate-Surface": "console"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return urllib.request.Request(url, headers=headers)


def get(url: str, token: str = "") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(call(url, token), timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def frame(stream) -> tuple[str, dict]:
    """The next server-sent event: its name and its JSON data (``eof`` at the end)."""
    name, data = "message", []
    while (line := stream.readline().decode()) != "\n":
        if not line:
            return "eof", {}
        if line.startswith("event: "):
            name = line[7:].strip()
        elif line.startswith("data: "):
            data.append(line[6:])
    return name, json.loads("".join(data)) if data else {}


def test_page_whoami_and_the_live_stream(gateway) -> None:
    gw = gateway(CONFIG)
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, "ready")
    status, page = get(gw.url + "/console/")
    assert status == 200 and b"console-routes" in page
    assert b"SIMULATED DATA" in page and b"simulated devices: a" in page
    assert get(gw.url + "/") == (200, page)  # the status endpoint's root leads to the console
    assert get(gw.url + "/console/console.js")[0] == 200
    assert get(gw.url + "/console/routes.py")[0] == 404  # only the page's own assets

    assert get(gw.url + "/whoami")[0] == 401
    assert get(gw.url + "/whoami", "nope")[0] == 401
    roles = {}
    for tok in ("view-tok", "oper-tok", "line-tok", "eng-tok"):
        status, body = get(gw.url + "/whoami", tok)
        assert status == 200
        roles[tok] = json.loads(body)
    assert roles["view-tok"]["role"] == "viewer" and not any(roles["view-tok"]["can"].values())
    oper = roles["oper-tok"]["can"]
    assert oper["alarms.ack"] and oper["alarms.shelve"] and oper["dlq.reprocess"]
    assert oper["component.restart"] and not oper["dlq.revalidate"]
    assert not oper["alarms.out-of-service"]
    line = roles["line-tok"]
    assert line["assets"] == ["pump-*"] and line["can"]["alarms.ack"]
    assert not line["can"]["component.restart"]  # the service refuses scoped tokens
    assert roles["eng-tok"]["can"]["dlq.revalidate"]

    assert get(gw.url + "/console/events")[0] == 401
    streams = [urllib.request.urlopen(call(gw.url + "/console/events", "view-tok"), timeout=10)]
    name, first = frame(streams[0])
    assert name == "message" and first["alarms"] == [] and first["alarms_total"] == 0
    assert first["health"]["gateway"] == "console-routes"
    assert any(e["event"] == "gateway_ready" for e in first["logs"])
    # Each message carries only the log lines the stream has not sent yet.
    _, second = frame(streams[0])
    assert not {e["seq"] for e in second["logs"]} & {e["seq"] for e in first["logs"]}

    streams += [
        urllib.request.urlopen(call(gw.url + "/console/events", tok), timeout=10)
        for tok in ["view-tok"] * (MAX_STREAMS - 2) + ["eng-tok"]
    ]
    assert get(gw.url + "/console/events", "view-tok")[0] == 503

    # A reload that removes the viewer's token ends its streams (no "closed": the
    # gateway runs on) and the page's next try is refused.
    gw.config.write_text(
        CONFIG.replace('{ token = "view-tok", role = "viewer", name = "vic" },', "")
    )
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config_reloaded" in gw.log(), 30, "reload")
    for s in streams[:-1]:
        assert names(s, until="eof")[-1] == "eof"
        s.close()
    assert get(gw.url + "/console/events", "view-tok")[0] == 401

    # Stopping the gateway ends every stream with a "closed" event, promptly.
    assert gw.stop() == 0
    assert names(streams[-1], until="closed")[-1] == "closed"
    streams[-1].close()


def names(stream, until: str, most: int = 20) -> list[str]:
    """Event names read from ``stream`` up to ``until`` (or ``most`` events, or the end)."""
    seen: list[str] = []
    while len(seen) < most and (not seen or seen[-1] not in (until, "eof")):
        seen.append(frame(stream)[0])
    return seen


def test_simulated_parts_name_simulators_and_synthetic_adapters() -> None:
    plain = decode(
        tomllib.loads(
            """
[[adapters]]
type = "modbus_tcp"
id = "plc-1"
host = "127.0.0.1"
port = 502
[[adapters.groups]]
unit_id = 1
asset_id = "pump-1"
points = [{ parameter = "p", address = 1, type = "uint16" }]
"""
        )
    )
    assert simulated_parts(plain) == []
    example = Path(__file__).resolve().parent.parent / "config" / "examples" / "gateway.toml"
    demo = decode(tomllib.loads(example.read_text()))
    assert "sim-plc" in simulated_parts(demo)
    assert simulated_parts(decode(tomllib.loads(synthetic("s", "x")))) == ["s"]
