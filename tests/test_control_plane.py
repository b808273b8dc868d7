"""Configuration from a control plane, end to end: a real ``otgate run`` pulls
from the real reference server (``otgate control-plane serve``)."""

from __future__ import annotations

import signal
import socket

import anyio
import pytest
from aiohttp import web
from peers.control_plane import ControlPlane, control_plane_fixture  # noqa: F401
from peers.gateway import gateway_fixture, synthetic, wait_for  # noqa: F401

from otgate.config.control_plane import ControlPlaneSection
from otgate.config.control_plane.agent import ControlPlaneAgent
from otgate.config.control_plane.contract import ApplyStatus, Outcome
from otgate.config.control_plane.document import CACHE, load_pulled
from otgate.config.control_plane.server import ControlPlaneServer
from otgate.config.load import ConfigError, Loaded, decode, load_config

SUPERVISION = """
[gateway]
id = "cp"
fault_injection = true
[status]
tokens = [{ token = "admin-token", role = "admin" }]
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 2.0
reload_grace_s = 20.0
"""


def bootstrap(url: str, extra: str = "", grace: float = 4.0) -> str:
    """The local file: the control-plane section (token from a credential), and ``extra``."""
    return (
        SUPERVISION
        + f"""
[control_plane]
url = "{url}"
gateway_id = "site-1"
token = "${{secret:cp_token}}"
poll_interval = 0.3
timeout = 2.0
grace = {grace}
"""
        + extra
    )


def version(n: int, body: str) -> str:
    return f"config_version = {n}\n" + SUPERVISION + body


@pytest.fixture(name="creds")
def creds_fixture(tmp_path) -> dict[str, str]:
    folder = tmp_path / "creds"
    folder.mkdir()
    (folder / "cp_token").write_text("site-1-token\n")
    return {"CREDENTIALS_DIRECTORY": str(folder)}


def statuses(cp: ControlPlane) -> list[tuple[int, str]]:
    return [(r["version"], r["status"]) for r in cp.reports("site-1")]


def running(gw) -> tuple[int, str]:
    h = gw.health()
    return h["config_version"], h["config_source"]


def test_version_bump_restarts_only_changed_bulkheads_and_a_broken_one_is_rejected(
    gateway, control_plane, creds
) -> None:
    cp = control_plane
    cp.publish("site-1", 1, version(1, synthetic("a", "pump-1") + synthetic("b", "pump-2")))
    gw = gateway(bootstrap(cp.url), env=creds)
    wait_for(lambda: running(gw) == (1, "control_plane") and gw.ready(), what="version 1")
    pid_a, pid_b = gw.component("a")["pid"], gw.component("b")["pid"]
    cp.publish(
        "site-1",
        2,
        version(2, synthetic("a", "pump-1") + synthetic("b", "pump-2", 0.2) + synthetic("c", "p3")),
    )
    wait_for(lambda: running(gw) == (2, "control_plane"), what="version 2")
    wait_for(lambda: gw.ready() and gw.component("b")["pid"] != pid_b, what="b restarted")
    assert gw.component("a")["pid"] == pid_a  # unchanged bulkhead untouched
    assert "changed=1 removed=0 unchanged=2 cleared=0 source=control_plane version=2" in gw.log()
    wait_for(lambda: statuses(cp) == [(1, "APPLIED"), (2, "APPLIED")], what="APPLIED reports")
    cache = gw.config.parent / "state" / CACHE
    wait_for(lambda: "config_version = 2" in cache.read_text(), what="version 2 cached")

    # A broken document: refused with its path, reported, nothing restarted.
    cp.publish("site-1", 3, version(3, '[[adapters]]\ntype = "synthetic"\nid = "a"\n'))
    wait_for(lambda: len(statuses(cp)) == 3, what="third report")
    rejected = cp.reports("site-1")[-1]
    assert (rejected["version"], rejected["status"]) == (3, "REJECTED")
    assert rejected["running_version"] == 2
    assert any(e.startswith("adapters[0]") for e in rejected["errors"]), rejected
    assert running(gw) == (2, "control_plane") and gw.component("a")["pid"] == pid_a
    assert gw.health()["status"] == "HEALTHY"
    assert "config_version = 2" in cache.read_text()
    assert "site-1-token" not in gw.log()


def test_a_config_that_fails_a_bulkhead_is_rolled_back_and_reported_once_the_cp_is_back(
    gateway, control_plane, creds
) -> None:
    cp = control_plane
    good = synthetic("a", "pump-1")
    cp.publish("site-1", 1, version(1, good))
    gw = gateway(bootstrap(cp.url, grace=8.0), env=creds)  # time to inject a fault in it
    wait_for(lambda: running(gw) == (1, "control_plane") and gw.ready(), what="version 1")
    pid_a = gw.component("a")["pid"]
    # 1 MiB of address space: the new bulkhead dies at every start.
    bad = (
        good
        + synthetic("b", "pump-2")
        + """
[[bulkheads]]
id = "b"
members = ["b"]
address_space_limit_mib = 1
"""
    )
    cp.publish("site-1", 2, version(2, bad))
    wait_for(lambda: "control_plane_config_pulled version=2" in gw.log(), what="pulled")
    cp.stop()  # the outcome must wait for the control plane, not get lost
    wait_for(lambda: "reload_rolled_back" in gw.log(), 30, "rollback")
    wait_for(lambda: "control_plane_report_retry version=2" in gw.log(), what="report retried")
    wait_for(lambda: [c["id"] for c in gw.health()["components"]] == ["a", "log"], what="b gone")
    assert running(gw) == (1, "control_plane") and gw.ready()
    assert gw.component("a")["pid"] == pid_a
    cp.start(cp.listen)
    wait_for(lambda: statuses(cp) == [(1, "APPLIED"), (2, "ROLLED_BACK")], what="reports")
    rolled = cp.reports("site-1")[-1]
    assert rolled["running_version"] == 1 and any(e.startswith("b:") for e in rolled["errors"])
    assert "config_version = 1" in (gw.config.parent / "state" / CACHE).read_text()
    assert gw.health()["control_plane"]["pending_reports"] == 0

    # A bulkhead that starts, then fails within the grace period: rolled back too.
    cp.publish("site-1", 3, version(3, good + synthetic("b", "pump-2")))
    wait_for(lambda: running(gw)[0] == 3, what="version 3 applied")
    wait_for(lambda: gw.component("b")["state"] == "RUNNING", what="b running")
    assert gw.post("/faults", {"kind": "exit", "bulkhead": "b"}, "admin-token")[0] == 200
    wait_for(lambda: len(statuses(cp)) == 3, 30, "third report")
    assert statuses(cp)[-1] == (3, "ROLLED_BACK")
    assert running(gw) == (1, "control_plane") and gw.component("a")["pid"] == pid_a


def test_control_plane_down_at_boot_runs_the_cache_then_refreshes(
    gateway, control_plane, creds
) -> None:
    cp = control_plane
    cp.publish("site-1", 1, version(1, synthetic("a", "pump-1")))
    first = gateway(bootstrap(cp.url), env=creds)
    wait_for(lambda: running(first) == (1, "control_plane") and first.ready(), what="version 1")
    wait_for(lambda: (first.config.parent / "state" / CACHE).exists(), what="cached")
    assert first.stop() == 0
    cp.stop()
    gw = gateway(bootstrap(cp.url), env=creds, name="again")  # same state dir
    wait_for(gw.ready, what="ready from the cache")
    assert running(gw) == (1, "cache")
    assert [c["id"] for c in gw.health()["components"]] == ["a", "log"]
    wait_for(lambda: "control_plane_unreachable" in gw.log(), what="pull failed")
    assert gw.health()["control_plane"]["last_error"]
    # Back online with a newer version: refreshed in the background.
    cp.publish("site-1", 2, version(2, synthetic("a", "pump-1") + synthetic("b", "pump-2")))
    cp.start(cp.listen)
    wait_for(lambda: running(gw) == (2, "control_plane") and gw.ready(), what="version 2")
    wait_for(lambda: (2, "APPLIED") in statuses(cp), what="APPLIED report")


def test_control_plane_down_for_the_whole_run(gateway, creds) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gw = gateway(bootstrap(f"http://127.0.0.1:{port}", synthetic("a", "pump-1")), env=creds)
    wait_for(gw.ready, what="ready from the local file")
    pid_a = gw.component("a")["pid"]
    wait_for(lambda: gw.log().count("control_plane_unreachable") >= 5, what="five failed pulls")
    health = gw.health()
    assert (health["config_version"], health["config_source"]) == (0, "file")
    assert health["status"] == "HEALTHY" and gw.component("a")["pid"] == pid_a
    assert "ClientConnectorError" in health["control_plane"]["last_error"]
    assert not (gw.config.parent / "state" / CACHE).exists()
    # SIGHUP pulls now (the control plane owns the config); the file is not re-read.
    failed = gw.log().count("control_plane_unreachable")
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: gw.log().count("control_plane_unreachable") > failed, what="pull on SIGHUP")
    assert "config_reloaded" not in gw.log() and gw.component("a")["pid"] == pid_a


def test_server_answers_304_for_the_same_etag_and_401_for_another_gateways_token(
    control_plane,
) -> None:
    cp = control_plane
    cp.publish("site-1", 1, version(1, synthetic("a", "p")))
    cp.publish("site-1", 10, version(10, synthetic("a", "p")))  # numeric, not lexical order
    status, body, headers = cp.request("/gateways/site-1/config", "site-1-token")
    assert status == 200 and body.startswith(b"config_version = 10")
    assert headers["OTgate-Config-Version"] == "10"
    again = cp.request(
        "/gateways/site-1/config", "site-1-token", {"If-None-Match": headers["ETag"]}
    )
    assert again[0] == 304
    assert cp.request("/gateways/site-1/config", "site-2-token")[0] == 401
    assert cp.request("/gateways/site-2/config", "site-2-token")[0] == 404


def test_pulled_document_may_not_override_the_local_bootstrap(tmp_path) -> None:
    local_file = tmp_path / "gw.toml"
    local_file.write_text(
        bootstrap("http://127.0.0.1:9").replace("${secret:cp_token}", "literal-token")
    )
    local = load_config(local_file)
    doc = version(4, '[control_plane]\nurl = "http://evil:1"\n').replace(
        '[gateway]\nid = "cp"', '[gateway]\nid = "cp"\nstate_dir = "/tmp/elsewhere"'
    )
    with pytest.raises(ConfigError) as err:
        load_pulled(doc.encode(), "pulled", local, version=5)
    assert err.value.problems == [
        "control_plane: comes from the local file; a pulled config may not set it",
        "gateway.state_dir: comes from the local file; a pulled config may not set it",
        "config_version: 4, but the control plane serves this document as version 5",
    ]
    ok = load_pulled(version(5, synthetic("a", "p")).encode(), "pulled", local, version=5)
    assert ok.config.control_plane == local.config.control_plane
    assert ok.config.gateway.state_dir == local.config.gateway.state_dir
    assert "literal-token" in ok.secrets  # redacted in logs like any secret


@pytest.mark.anyio
async def test_reports_wait_in_a_bounded_queue_while_the_control_plane_is_down(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ControlPlaneSection(
        url=f"http://127.0.0.1:{port}",
        gateway_id="site-1",
        token="t",
        poll_interval=0.5,
        report_queue=2,
    )

    class Running:  # what the agent reads of the gateway; nothing is pulled here
        loaded = Loaded(decode({"config_version": 1}))

    agent = ControlPlaneAgent(Running(), cfg)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        for v in (2, 3, 4):
            agent.report(v, Outcome(ApplyStatus.REJECTED, "refused", [f"v{v}: bad"]))
        assert agent.reports_dropped == 1 and len(agent.pending) == 2
        with anyio.fail_after(10):
            while "ClientConnectorError" not in agent.last_error:
                await anyio.sleep(0.05)
        server = ControlPlaneServer(tmp_path, {"site-1": "t"})
        runner = web.AppRunner(server.app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            with anyio.fail_after(15):  # retried with backoff capped at poll_interval
                while agent.pending:
                    await anyio.sleep(0.05)
            assert [(r["version"], r["errors"]) for r in server.read_reports()] == [
                (3, ["v3: bad"]),
                (4, ["v4: bad"]),
            ]
            assert agent.reports_sent == 2
        finally:
            tg.cancel_scope.cancel()
            await runner.cleanup()
