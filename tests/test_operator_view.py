"""What an operator sees: ``otgate status``'s LAST ERROR (age, recovered,
width), the shape of ``/metrics``' state gauge, and process titles in ``ps``."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
from peers.gateway import gateway_fixture, synthetic, wait_for  # noqa: F401
from prometheus_client.parser import text_string_to_metric_families

from otgate.actors.actor import Actor
from otgate.actors.messages import Snapshot, State
from otgate.supervisors import metrics
from otgate.supervisors.cmd_status import render

HEADER = """
[gateway]
id = "gw-view"
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 2.0
"""


def node(cid: str, state: str = "RUNNING", **extra) -> dict:
    return {"id": cid, "kind": "session", "state": state, "restarts": 0, **extra}


def doc(*components: dict, now: float = 10_000.0) -> dict:
    return {"gateway": "g", "status": "DEGRADED", "uptime_s": 5.0, "time": now,
            "components": list(components)}


def error_cells(text: str) -> dict[str, str]:
    """component id -> its LAST ERROR cell, from the rendered table (the first
    row of that id: a bulkhead comes before its same-named session)."""
    lines = text.splitlines()
    col = lines[1].index("LAST ERROR")
    cells: dict[str, str] = {}
    for line in lines[2:]:
        cells.setdefault(line.split()[1], line[col:])
    return cells


def test_last_error_shows_its_age_and_whether_the_component_recovered() -> None:
    refused = "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 14840)"
    cells = error_cells(render(doc(
        node("old", last_error=refused, last_error_at=10_000.0 - 21 * 60 - 4),
        node("down", "DEGRADED", last_error=refused, last_error_at=10_000.0 - 130),
        node("fresh", last_error="unit 1 @4: exception 2", last_error_at=10_000.0 - 2),
        node("clean"),
    )))
    assert cells["old"] == f"21m04s ago (recovered): {refused}"
    assert cells["down"] == f"2m10s ago: {refused}"  # still DEGRADED: not history
    assert cells["fresh"] == "2s ago: unit 1 @4: exception 2"  # running, but just now
    assert cells["clean"] == ""
    assert render(doc()).splitlines()[1].split() == [  # no component yet: just the header
        "COMPONENT", "KIND", "STATE", "PID", "RESTARTS", "BEAT", "RSS", "RECORDS", "LAST", "ERROR"]


def test_recovered_errors_are_grey_on_a_colour_terminal_only() -> None:
    d = doc(node("old", last_error="E: x", last_error_at=0.0),
            node("down", "DEGRADED", last_error="E: y", last_error_at=0.0))
    coloured = render(d, color=True).splitlines()
    assert "\033[2m" in coloured[2] and "(recovered)" in coloured[2]
    assert "\033[" not in coloured[3]
    assert "\033[" not in render(d)


def test_a_wider_terminal_shows_more_and_cuts_at_a_word() -> None:
    error = "OperationalError: connection failed: connection to server at 127.0.0.1, port 15432 failed: FATAL: the database system is starting up"
    d = doc(node("sink", "DEGRADED", last_error=error, last_error_at=10_000.0 - 5))
    full = f"5s ago: {error}"
    assert error_cells(render(d))["sink"] == full  # a pipe gets it whole
    narrow = render(d, width=100).splitlines()
    wide = render(d, width=160).splitlines()
    assert max(map(len, narrow)) <= 100 and max(map(len, wide)) <= 160
    short, longer = error_cells("\n".join(narrow))["sink"], error_cells("\n".join(wide))["sink"]
    assert len(short) < len(longer) < len(full)
    for cell in (short, longer):
        assert cell.endswith("…")
        assert full.startswith(cell[:-1]) and full[len(cell) - 1] in " ,:"  # whole words


def test_an_actor_error_carries_the_time_it_happened() -> None:
    actor = Actor("a")
    assert actor.snapshot().last_error_at is None
    before = time.time()
    actor.last_error = "ConnectionRefusedError: x"
    snap = actor.snapshot()
    assert snap.last_error == "ConnectionRefusedError: x"
    assert before <= snap.last_error_at <= time.time()
    actor.last_error = None
    assert actor.snapshot().last_error_at is None


def test_metrics_state_is_one_series_per_component_at_its_current_state() -> None:
    states = [State.RUNNING, State.DEGRADED, State.FAILED, State.RESTARTING]
    tree = Snapshot(id="gateway", kind="supervisor", state=State.RUNNING, children=[
        Snapshot(id=f"b{i}", kind="bulkhead", state=s,
                 children=[Snapshot(id=f"s{i}", kind="session", state=s)])
        for i, s in enumerate(states)
    ])
    text = metrics.render(lambda: tree).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = families["otgate_component_state"].samples
    assert len(samples) == 2 * len(states)  # one per component, not one per possible state
    assert {s.value for s in samples} == {1.0}
    got = {s.labels["id"]: s.labels["state"] for s in samples}
    assert got == {**{f"b{i}": s.value for i, s in enumerate(states)},
                   **{f"s{i}": s.value for i, s in enumerate(states)}}
    assert len([ln for ln in text.splitlines() if ln.startswith("otgate_component_state")]) == 8


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def test_a_killed_bulkhead_shows_its_error_and_age_and_every_process_its_title(gateway) -> None:
    gw = gateway(HEADER + synthetic("a", "pump-1") + synthetic("b", "pump-2"))
    wait_for(lambda: gw.health()["status"] == "HEALTHY", what="HEALTHY")

    # Titles: the root, the fork server and every bulkhead say what they are.
    pids = {c["id"]: c["pid"] for c in gw.health()["components"]}
    assert cmdline(gw.proc.pid) == "otgate: gateway gw-view"
    for cid, pid in pids.items():
        assert cmdline(pid) == f"otgate: bulkhead {cid}"
    parents = {psutil.Process(pid).ppid() for pid in pids.values()}
    assert len(parents) == 1 and cmdline(parents.pop()) == "otgate: forkserver"

    killed_at = time.time()
    os.kill(pids["a"], signal.SIGKILL)
    a = wait_for(
        lambda: (c := gw.component("a"))["state"] == "RUNNING" and c["restarts"] >= 1 and c,
        what="bulkhead a back",
    )
    assert a["last_error"] == "BulkheadDied: process killed by SIGKILL"
    assert killed_at - 1 <= a["last_error_at"] <= time.time()
    assert cmdline(a["pid"]) == "otgate: bulkhead a"

    d = gw.health()
    assert error_cells(render(d))["a"].endswith("s ago: BulkheadDied: process killed by SIGKILL")
    d["time"] += 60  # a minute later, still running: history
    assert "ago (recovered): BulkheadDied" in error_cells(render(d))["a"]


def test_log_commands_load_the_demo_config_without_the_heavy_libraries() -> None:
    """``otgate log read`` stays quick (~0.2 s here, was ~0.6 s): loading a config
    and reading the embedded log import neither the protocol stacks nor the
    network clients (together ~0.4 s of imports)."""
    import subprocess
    import sys

    example = Path(__file__).resolve().parent.parent / "config" / "examples" / "gateway.toml"
    code = f"""
import sys
from pathlib import Path
from otgate.supervisors.cli import build_parser
build_parser("log")
from otgate.config.load import load_config
load_config(Path({str(example)!r}), env={{}})
heavy = ("asyncua", "aiohttp", "aiokafka", "pymodbus.server", "psycopg")
print(" ".join(m for m in heavy if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == []
