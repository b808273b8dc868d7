"""Process bulkheads under a real ``otgate run``: each fault heals and never
stops a sibling."""

from __future__ import annotations

import os
import signal

import psutil
import pytest
from peers.gateway import gateway_fixture, synthetic, wait_for  # noqa: F401

from otgate.simulations.gateway_process import GatewayProcess

TOKEN = "t0ken-for-tests"
HEADER = f"""
[gateway]
id = "gw-test"
fault_injection = true
[status]
tokens = [{{ token = "{TOKEN}", role = "admin" }}, {{ token = "viewer-token", role = "viewer" }}]
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 2.0
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    """One gateway with bulkheads a and b, shared by the checks that only look at it."""
    path = tmp_path_factory.mktemp("pair") / "gateway.toml"
    path.write_text(HEADER + synthetic("a", "pump-1") + synthetic("b", "pump-2"))
    gw = GatewayProcess(path).start()
    try:
        wait_for(lambda: gw.get("/health/ready")[0] == 200, what="ready")
        yield gw
    finally:
        assert gw.stop() == 0


def published(gw, cid: str) -> float:
    node = gw.component(cid)
    return sum(c["metrics"].get("readings_published", 0) for c in node["children"])


def running(gw, cid: str, restarts: int = 0):
    node = gw.component(cid)
    return node["state"] == "RUNNING" and node["restarts"] >= restarts and node


def test_sigkill_bulkhead_is_replaced_and_sibling_keeps_running(gateway) -> None:
    gw = gateway(HEADER + synthetic("a", "pump-1") + synthetic("b", "pump-2"))
    wait_for(lambda: gw.health()["status"] == "HEALTHY", what="HEALTHY")
    pid_a, pid_b = gw.component("a")["pid"], gw.component("b")["pid"]
    before_b = published(gw, "b")
    os.kill(pid_a, signal.SIGKILL)
    node = wait_for(lambda: running(gw, "a", restarts=1), what="a restarted")
    assert node["pid"] != pid_a
    assert "SIGKILL" in node["last_error"]
    assert gw.component("b")["pid"] == pid_b and gw.component("b")["restarts"] == 0
    wait_for(lambda: published(gw, "b") > before_b + 5, what="b still publishing")


def test_hung_bulkhead_is_killed_and_restarted(gateway) -> None:
    gw = gateway(HEADER + synthetic("a", "pump-1") + synthetic("b", "pump-2"))
    wait_for(lambda: gw.health()["status"] == "HEALTHY", what="HEALTHY")
    pid_b = gw.component("b")["pid"]
    assert gw.post("/faults", {"kind": "hang", "bulkhead": "a"}, TOKEN)[0] == 200
    node = wait_for(lambda: running(gw, "a", restarts=1), what="hung a restarted")
    assert "BulkheadHung" in node["last_error"]
    assert gw.component("b")["pid"] == pid_b and gw.component("b")["restarts"] == 0


def test_bulkhead_over_memory_limit_is_killed(gateway) -> None:
    toml = (
        HEADER
        + synthetic("a", "pump-1")
        + synthetic("b", "pump-2")
        + """
[[bulkheads]]
id = "a"
members = ["a"]
memory_limit_mib = 200
"""
    )
    gw = gateway(toml)
    wait_for(lambda: gw.health()["status"] == "HEALTHY", what="HEALTHY")
    pid_b = gw.component("b")["pid"]
    assert gw.post("/faults", {"kind": "leak", "bulkhead": "a"}, TOKEN)[0] == 200
    node = wait_for(lambda: running(gw, "a", restarts=1), what="leaking a restarted")
    assert "MemoryLimitExceeded" in node["last_error"]
    assert gw.component("b")["pid"] == pid_b


def test_crashing_in_process_actor_restarts_inside_its_bulkhead(gateway) -> None:
    toml = (
        HEADER
        + synthetic("s1", "pump-1")
        + synthetic("s2", "pump-2")
        + """
[[bulkheads]]
id = "line"
members = ["s1", "s2"]
"""
    )
    gw = gateway(toml)
    wait_for(lambda: gw.health()["status"] == "HEALTHY", what="HEALTHY")
    pid = gw.component("line")["pid"]
    assert (
        gw.post("/faults", {"kind": "crash", "bulkhead": "line", "target": "s1"}, TOKEN)[0] == 200
    )

    def s1_restarted():
        kids = {c["id"]: c for c in gw.component("line")["children"]}
        return kids["s1"]["restarts"] == 1 and kids["s1"]["state"] == "RUNNING" and kids

    kids = wait_for(s1_restarted, what="s1 restarted in-process")
    assert "injected crash" in kids["s1"]["last_error"]
    assert kids["s2"]["restarts"] == 0
    assert gw.component("line")["pid"] == pid and gw.component("line")["restarts"] == 0


def test_failed_bulkhead_degrades_gateway_until_operator_restart(gateway) -> None:
    toml = (
        HEADER.replace(
            "[supervision]",
            '[supervision]\ngateway = { intensity = 1, period = 60.0, on_exhausted = "fail_child", backoff_initial = 0.01 }',
        )
        + synthetic("a", "pump-1")
        + synthetic("b", "pump-2")
    )
    gw = gateway(toml)
    wait_for(lambda: gw.health()["status"] == "HEALTHY", what="HEALTHY")
    os.kill(gw.component("a")["pid"], signal.SIGKILL)
    wait_for(lambda: running(gw, "a", restarts=1), what="first restart")
    os.kill(gw.component("a")["pid"], signal.SIGKILL)
    wait_for(lambda: gw.component("a")["state"] == "FAILED", what="a FAILED")
    health = gw.health()
    assert health["status"] == "DEGRADED"
    assert gw.get("/health/ready")[0] == 503
    before_b = published(gw, "b")
    wait_for(lambda: published(gw, "b") > before_b + 5, what="b keeps moving data")
    # Operators need a token with at least the operator role.
    assert gw.post("/components/a/restart")[0] == 401
    assert gw.post("/components/a/restart", token="viewer-token")[0] == 403
    assert gw.post("/components/a/restart", token=TOKEN)[0] == 200
    wait_for(lambda: gw.health()["status"] == "HEALTHY", what="HEALTHY again")
    assert gw.get("/health/ready")[0] == 200


def test_sigterm_stops_everything_and_exits_zero(gateway) -> None:
    gw = gateway(HEADER + synthetic("a", "pump-1") + synthetic("b", "pump-2"))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, what="ready")
    family = gw.descendants()
    assert len(family) >= 3  # fork server + two bulkheads (+ resource tracker)
    assert gw.stop(signal.SIGTERM) == 0
    wait_for(
        lambda: not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
        timeout=10,
        what="every child process gone",
    )
    log = gw.log()
    assert log.index("gateway_stopping") < log.index("gateway_stopped")


def test_gateway_killed_with_sigkill_leaves_no_orphans(gateway) -> None:
    gw = gateway(HEADER + synthetic("a", "pump-1"))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, what="ready")
    family = gw.descendants()
    gw.stop(signal.SIGKILL)
    wait_for(
        lambda: not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
        timeout=10,
        what="orphans to die with their parent",
    )


def _listening(pids: list[int]) -> list[tuple[str, int, str]]:
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid in pids and (conn.status == psutil.CONN_LISTEN or conn.type == 2):  # 2 = UDP
            found.append((conn.laddr.ip, conn.laddr.port, conn.status))
    return found


def test_no_socket_listens_beyond_loopback(pair) -> None:
    gw = pair
    pids = [gw.proc.pid, *(p.pid for p in gw.descendants())]
    sockets = _listening(pids)
    assert sockets, "the status endpoint should be listening"
    public = [s for s in sockets if s[0] not in ("127.0.0.1", "::1")]
    assert public == [], f"listening beyond loopback: {public}"
    # Only the root process listens at all; bulkheads talk over socketpairs.
    assert {p for p in pids if _listening([p])} == {gw.proc.pid}


def test_health_and_metrics_show_the_tree(pair) -> None:
    gw = pair
    assert gw.get("/health/live") == (200, {"live": True})
    doc = gw.health()
    assert doc["gateway"] == "gw-test" and doc["status"] == "HEALTHY"
    assert [c["id"] for c in doc["components"]] == ["a", "b", "log"]  # log = retention bulkhead
    bulkhead = doc["components"][0]
    assert {"id", "kind", "state", "pid", "restarts", "last_error", "children"} <= bulkhead.keys()
    kinds = {c["id"]: c["kind"] for c in bulkhead["children"]}
    assert kinds == {"disk-guard": "log_maintenance", "a": "session"}
    status, text = gw.get("/metrics")
    assert status == 200
    assert 'otgate_gateway_status{status="HEALTHY"} 1.0' in text
    assert 'otgate_component_restarts_total{id="a",kind="bulkhead",parent="gateway"} 0.0' in text
    assert 'otgate_heartbeat_age_seconds{bulkhead="a"}' in text
    assert "otgate_mailbox_depth" in text


def test_fault_injection_is_refused_unless_enabled(gateway) -> None:
    gw = gateway(
        HEADER.replace("fault_injection = true", "fault_injection = false") + synthetic("a", "p")
    )
    assert gw.post("/faults", {"kind": "hang", "bulkhead": "a"}, TOKEN)[0] == 403


@pytest.mark.parametrize("sig", [signal.SIGINT])
def test_sigint_is_a_clean_stop_too(gateway, sig) -> None:
    gw = gateway(HEADER + synthetic("a", "pump-1"))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, what="ready")
    assert gw.stop(sig) == 0


def test_aggregator_apart_runs_in_its_own_process(gateway) -> None:
    """``[processing] aggregator_apart``: the aggregator in bulkhead ``aggregation``,
    aggregating what the validator (bulkhead ``processing``) wrote through the log."""
    gw = gateway(HEADER + synthetic("a", "pump-1") + """
[processing]
aggregator_apart = true
[processing.validator]
[processing.aggregator]
resolutions = ["1s"]
watermark_lateness_s = 0.2
""")
    wait_for(lambda: gw.health()["status"] == "HEALTHY", 60, "HEALTHY")  # four bulkheads
    stages = {pid: [c["id"] for c in part(gw, pid)["children"]]
              for pid in ("processing", "aggregation")}
    assert stages == {"processing": ["validator", "alarms"], "aggregation": ["aggregator"]}
    assert gw.component("processing")["pid"] != gw.component("aggregation")["pid"]

    def emitted() -> bool:
        aggregator = part(gw, "aggregation")["children"][0]
        return aggregator["metrics"].get("windows_emitted_total", 0) > 0

    wait_for(emitted, what="1 s windows emitted by the aggregator apart")


def part(gw, pid: str) -> dict:
    """The part's supervisor inside its bulkhead (beside the disk guard)."""
    return next(c for c in gw.component(pid)["children"] if c["id"] == pid)
