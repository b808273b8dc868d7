"""The gateway survives its own bad days: broken reloads, a stalled root,
a reload that cannot start, bad tokens, secrets in bulkhead errors."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

from peers.gateway import gateway_fixture, synthetic, wait_for  # noqa: F401

HEADER = """
[gateway]
id = "resilience"
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 2.0
reload_grace_s = 3.0
[status]
tokens = [{ token = "admin-token", role = "admin" }]
"""


def restarts(gw) -> dict[str, int]:
    return {c["id"]: c["restarts"] for c in gw.health()["components"]}


def test_sighup_with_a_malformed_file_is_refused_and_the_gateway_keeps_running(gateway) -> None:
    gw = gateway(HEADER + synthetic("a", "p"))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, what="ready")
    gw.config.write_text("gateway = 5\n")
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload_refused" in gw.log(), what="reload refused")
    assert "gateway: Expected `object`" in gw.log()
    assert gw.proc.poll() is None and gw.get("/health/ready")[0] == 200


def test_a_stalled_gateway_does_not_kill_healthy_bulkheads(gateway) -> None:
    gw = gateway(HEADER + synthetic("a", "p") + synthetic("b", "q"))
    wait_for(lambda: gw.health()["status"] == "HEALTHY", what="HEALTHY")
    before = restarts(gw)
    os.kill(gw.proc.pid, signal.SIGSTOP)  # the root, not the bulkheads, stops for 3 s
    time.sleep(3.0)
    os.kill(gw.proc.pid, signal.SIGCONT)
    time.sleep(1.5)  # a wrong verdict would kill within one watchdog tick
    assert restarts(gw) == before
    assert gw.health()["status"] == "HEALTHY"


def test_a_reload_that_cannot_start_is_rolled_back(gateway) -> None:
    good = HEADER + synthetic("a", "p")
    gw = gateway(good)
    wait_for(lambda: gw.get("/health/ready")[0] == 200, what="ready")
    cache = gw.config.parent / "state" / "last-good-config.toml"
    wait_for(cache.exists, what="last good cached")
    # 1 MiB of address space: the new bulkhead dies at every start.
    gw.config.write_text(good + synthetic("b", "q") + """
[[bulkheads]]
id = "b"
members = ["b"]
address_space_limit_mib = 1
""")
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload_rolled_back" in gw.log(), 30, "rollback")
    wait_for(lambda: [c["id"] for c in gw.health()["components"]] == ["a", "log"], what="b gone")
    wait_for(lambda: gw.get("/health/ready")[0] == 200, what="ready again")
    assert "address_space_limit_mib" not in cache.read_text()  # the bad file was not cached


def test_bad_tokens_get_401_not_500(gateway) -> None:
    gw = gateway(HEADER + synthetic("a", "p"))
    assert gw.post("/components/a/restart", token="wrong")[0] == 401
    req = urllib.request.Request(
        gw.url + "/components/a/restart", data=b"{}", method="POST",
        headers={"Authorization": "Bearer s3cr3t-tok\u00e9n".encode().decode("latin-1")},
    )
    try:
        urllib.request.urlopen(req, timeout=5)
        status = 200
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status == 401


def test_bulkhead_logs_are_json_and_redacted(gateway, tmp_path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "pg_password").write_text("S3cretPW\n")
    toml = HEADER + synthetic("a", "p", 0.1) + """
[processing.validator]
[processing.aggregator]
enabled = false
[[sinks]]
type = "postgres"
id = "pg"
dsn = "postgresql://otgate:${secret:pg_password}@[127.0.0.1:5432/test"
"""
    gw = gateway(toml, env={"CREDENTIALS_DIRECTORY": str(creds)})

    def bulkhead_lines() -> list[dict]:
        docs = [json.loads(x) for x in gw.log().splitlines() if x.strip()]
        return [d for d in docs if d["pid"] != gw.proc.pid and "127.0.0.1:5432" in d["message"]]

    # The sink's connection error echoes the DSN (with the password) from inside its bulkhead.
    wait_for(bulkhead_lines, 30, "the sink's error to be logged by its bulkhead")
    lines = [line for line in gw.log().splitlines() if line.strip()]
    assert all(json.loads(line)["level"] for line in lines)  # every line is a JSON object
    assert "S3cretPW" not in gw.log()
    assert "***" in bulkhead_lines()[0]["message"]
