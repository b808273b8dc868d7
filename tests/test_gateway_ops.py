"""Operator surfaces of a running gateway: systemd notify, SIGHUP reload,
the last good config, ``otgate status`` and ``otgate check-config``."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from peers.gateway import gateway_fixture, synthetic, wait_for  # noqa: F401
from peers.notify_socket import notify_socket_fixture  # noqa: F401

HEADER = """
[gateway]
id = "ops"
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 2.0
"""


def otgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otgate.supervisors.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.anyio
async def test_ready_watchdog_and_stopping_reach_the_notify_socket(gateway, notify_socket) -> None:
    gw = gateway(HEADER + synthetic("a", "p"), env={**notify_socket.env, "WATCHDOG_USEC": "400000"})
    ready = await notify_socket.wait_for("READY=1")
    assert ready.pid == gw.proc.pid  # NotifyAccess=main: only the main pid may notify
    assert gw.get("/health/ready")[0] == 200  # READY=1 only once the tree is up
    await notify_socket.wait_for("WATCHDOG=1")
    await notify_socket.wait_for("WATCHDOG=1")
    gw.proc.send_signal(signal.SIGTERM)
    await notify_socket.wait_for("STOPPING=1")
    assert gw.stop() == 0


def test_sighup_restarts_only_changed_bulkheads(gateway, tmp_path) -> None:
    gw = gateway(HEADER + synthetic("a", "pump-1") + synthetic("b", "pump-2"))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, what="ready")
    pid_a, pid_b = gw.component("a")["pid"], gw.component("b")["pid"]
    gw.config.write_text(
        HEADER + synthetic("a", "pump-1") + synthetic("b", "pump-2", 0.2) + synthetic("c", "pump-3")
    )
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: {c["id"] for c in gw.health()["components"]} == {"a", "b", "c", "log"}, what="c added"
    )
    wait_for(
        lambda: gw.component("b")["pid"] != pid_b and gw.component("b")["state"] == "RUNNING",
        what="b restarted",
    )
    assert gw.component("a")["pid"] == pid_a
    wait_for(
        lambda: "config_reloaded added=1 changed=1 removed=0 unchanged=2" in gw.log(), what="log"
    )
    # A broken file is refused; the running tree stays as it is.
    gw.config.write_text(HEADER + '[[adapters]]\ntype = "synthetic"\nid = "a"\n')
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload_refused" in gw.log(), what="reload refused")
    assert "adapters[0]" in gw.log()
    assert gw.component("a")["pid"] == pid_a and gw.health()["status"] == "HEALTHY"


def test_last_good_config_boots_when_the_file_is_broken(gateway, tmp_path) -> None:
    gw = gateway(HEADER + synthetic("a", "pump-1"))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, what="ready")
    assert gw.stop() == 0
    assert (tmp_path / "state" / "last-good-config.toml").exists()
    broken = gateway("[gateway]\nid = 5\n", name="broken")
    wait_for(lambda: broken.get("/health/ready")[0] == 200, what="ready from cache")
    assert "config_invalid_using_last_good" in broken.log()
    assert "gateway.id: Expected `str`, got `int`" in broken.log()
    assert [c["id"] for c in broken.health()["components"]] == ["a", "log"]


def test_bad_config_without_cache_exits_78_naming_the_path(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[adapters]]\ntype = "synthetic"\nid = "a"\nasset_id = "x"\npoints = [{ parameter = "p", colour = 1 }]\n'
    )
    result = otgate("run", "--config", str(path))
    assert result.returncode == 78
    assert "adapters[0].points[0]: Object contains unknown field `colour`" in result.stderr


def test_check_config_reports_paths_and_exit_codes(tmp_path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(HEADER + synthetic("a", "pump-1"))
    ok = otgate("check-config", str(good))
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(
        HEADER + synthetic("a", "pump-1").replace('type = "synthetic"', 'type = "modbus_tcpp"')
    )
    res = otgate("check-config", str(bad))
    assert res.returncode == 1
    assert "adapters[0].type: Invalid value 'modbus_tcpp' (expected one of" in res.stderr
    assert "modbus_tcp" in res.stderr
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("[gateway\n")
    res = otgate("check-config", str(syntax))
    assert res.returncode == 1 and "not valid TOML" in res.stderr


def test_secrets_resolve_and_never_show(gateway, tmp_path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "status_token").write_text("very-secret-value\n")
    toml = (
        HEADER
        + '[status]\ntokens = [{ token = "${secret:status_token}", role = "operator" }]\n'
        + synthetic("a", "p")
    )
    gw = gateway(toml, env={"CREDENTIALS_DIRECTORY": str(creds)})
    wait_for(lambda: gw.get("/health/ready")[0] == 200, what="ready")
    assert gw.post("/components/a/restart", token="very-secret-value")[0] == 200
    assert gw.post("/components/a/restart", token="${secret:status_token}")[0] == 401
    assert "very-secret-value" not in gw.log()
    cached = (tmp_path / "state" / "last-good-config.toml").read_text()
    assert "${secret:status_token}" in cached and "very-secret-value" not in cached


def test_status_command_renders_the_tree(gateway) -> None:
    gw = gateway(HEADER + synthetic("a", "pump-1"))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, what="ready")
    res = otgate("status", "--url", gw.url)
    assert res.returncode == 0, res.stderr
    first, header, *rows = res.stdout.splitlines()
    assert first.startswith("gateway ops: HEALTHY")
    assert header.split()[:4] == ["COMPONENT", "KIND", "STATE", "PID"]
    assert any("bulkhead" in r and "RUNNING" in r for r in rows)
    assert otgate("status", "--url", "http://127.0.0.1:9").returncode == 2
