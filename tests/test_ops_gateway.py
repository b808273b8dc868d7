"""Operator services on a real ``otgate run``: the CLI and HTTP faces of the
DLQ workflow and the alarm table, role boundaries (401/403, nothing changed,
audited) and the audit trail read back with ``otgate log read``."""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys

import anyio
from peers.gateway import gateway_fixture, synthetic, wait_for  # noqa: F401

from otgate.actors.log.config import LogConfig
from otgate.actors.records import Alarm, AlarmSeverity, AlarmState, DeadLetter, Reading
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.tail import scan

T0 = 1_700_000_000_000_000_000
TOKENS = """
[status]
tokens = [
  { token = "view-tok", role = "viewer", name = "vic" },
  { token = "oper-tok", role = "operator", name = "olga" },
  { token = "eng-tok", role = "engineer", name = "erik" },
]
"""


def config(max_flow: float) -> str:
    return f"""
[gateway]
id = "ops"
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 2.0
{TOKENS}
[processing.validator]
rules = [{{ parameter = "flow", max = {max_flow}, on_out_of_range = "reject" }}]
[processing.aggregator]
enabled = false
""" + synthetic("a", "pump-1", 0.05)


def otgate(gw, *args: str, token: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OTGATE_STATUS_URL": gw.url}
    env.pop("OTGATE_TOKEN", None)
    if token:
        env["OTGATE_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "otgate.supervisors.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def jlines(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def dlq(gw, query: str = "") -> dict:
    res = otgate(gw, "dlq", "list", "--json", "--limit", "10000", *query.split(), token="view-tok")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def write_alarms(state_dir, alarms: list[Alarm]) -> None:
    """Append transitions to the running gateway's log, as its evaluator would."""

    async def run() -> None:
        oplog = OperatorLog(LogConfig(), state_dir)
        try:
            for a in alarms:
                await oplog.append("alarms.clean", a.alarm_id, a)
        finally:
            await oplog.close()

    anyio.run(run)


def read_topic(state_dir, topic: str) -> list:
    async def run() -> list:
        oplog = OperatorLog(LogConfig(), state_dir)
        try:
            return [obj async for _rec, obj in scan(oplog, topic)]
        finally:
            await oplog.close()

    return anyio.run(run)


SEEDED = 5_000  # ten chunks of 500: killed after the first, far from the last


def seed_letters(state_dir, n: int, value: float = 150.0) -> None:
    """Dead letters in the gateway's log before it starts (a rule refused them)."""

    async def run() -> None:
        oplog = OperatorLog(LogConfig(), state_dir)
        try:
            letters = [
                DeadLetter(
                    reading=Reading(
                        asset_id="pump-9",
                        parameter="flow",
                        value=value,
                        device_time=T0 + i,
                        gateway_time=T0 + i,
                        seq=i,
                        adapter_id="seed",
                    ),
                    reason="out_of_range [None, 100.0]",
                    gateway_time=T0 + i,
                )
                for i in range(n)
            ]
            await oplog.append_many("dlq.telemetry", [("pump-9", lt) for lt in letters])
        finally:
            await oplog.close()

    anyio.run(run)


def test_dlq_workflow_and_roles_through_cli_and_http(gateway, tmp_path) -> None:
    state_dir = tmp_path / "state"
    seed_letters(state_dir, 50, 50.0)  # pump-9: letters from an earlier run, not from a device here
    gw = gateway(config(18.0))  # the synthetic sine runs 15..25: the top half is rejected
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, "ready")
    wait_for(lambda: dlq(gw, "--asset pump-1")["total"] >= 5, 60, "dead letters")

    # Refused calls: 401 without / with a wrong token, 403 for a viewer; nothing changes.
    first = dlq(gw, "--asset pump-1")["letters"][0]["id"]
    assert gw.post("/dlq/reprocess", {"ids": [first]})[0] == 401
    assert gw.post("/dlq/reprocess", {"ids": [first]}, token="nope")[0] == 401
    assert gw.post("/dlq/reprocess", {"ids": [first]}, token="view-tok")[0] == 403
    assert gw.get("/dlq")[0] == 401  # reads need a viewer token too
    res = otgate(gw, "dlq", "discard", first, token="view-tok")
    assert res.returncode == 3 and "403" in res.stderr
    res = otgate(gw, "dlq", "revalidate", token="oper-tok")  # after a rule change: engineer
    assert res.returncode == 3 and "needs engineer" in res.stderr
    assert dlq(gw, "--disposition REPROCESSED,DISCARDED")["total"] == 0

    # Show: the reason and the original reading from telemetry.raw.
    res = otgate(gw, "dlq", "show", first, token="view-tok")
    assert res.returncode == 0, res.stderr
    assert "out_of_range [None, 18.0]" in res.stdout and "pump-1/flow" in res.stdout
    shown = json.loads(otgate(gw, "dlq", "show", first, "--json", token="view-tok").stdout)
    assert shown["original"]["seq"] == shown["letter"]["reading"]["seq"]

    # An operator discards one and reprocesses another: still out of range → refused.
    second = dlq(gw, "--asset pump-1")["letters"][1]["id"]
    res = otgate(gw, "dlq", "discard", first, "--note", "sensor test", token="oper-tok")
    assert res.returncode == 0 and "discarded 1" in res.stdout, res.stdout + res.stderr
    res = otgate(gw, "dlq", "reprocess", second, "--json", token="oper-tok")
    assert json.loads(res.stdout)["counts"] == {"refused": 1}

    # The engineer widens the rule (SIGHUP reload) and re-validates everything pending.
    gw.config.write_text(config(100.0))
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config_reloaded" in gw.log(), 60, "reloaded")
    res = otgate(gw, "dlq", "revalidate", "--json", token="eng-tok")
    assert res.returncode == 0, res.stderr
    counts = json.loads(res.stdout)["counts"]
    pending = dlq(gw, "--disposition PENDING")["total"]
    assert pending == 0 and counts["reprocessed"] >= 54 and "refused" not in counts
    again = json.loads(otgate(gw, "dlq", "revalidate", "--json", token="eng-tok").stdout)
    assert again["counts"] == {}

    # Each reprocessed seeded reading is in telemetry.clean exactly once. (A reading
    # the validator itself replays after its restart under the new rules can be
    # there besides its reprocessed letter: the sinks' upsert absorbs that.)
    reprocessed = {
        v["letter"]["reading"]["seq"]
        for v in dlq(gw, "--disposition REPROCESSED --asset pump-9")["letters"]
    }
    assert reprocessed == set(range(50))
    seeded = collections.Counter(
        r.seq for r in read_topic(state_dir, "telemetry.clean") if r.adapter_id == "seed"
    )
    assert len(seeded) == 50 and set(seeded.values()) == {1}
    assert {v["id"]: v["disposition"] for v in dlq(gw)["letters"]}[first] == "DISCARDED"

    # The audit trail: who, role, what, result, from where; never the token.
    read = otgate(gw, "log", "read", "logs.audit", "--config", str(gw.config), "--json")
    audit = [
        (a["who"], a["role"], a["surface"], a["action"], a["result"]) for a in jlines(read.stdout)
    ]
    assert audit[:5] == [
        ("", "", "http", "dlq.reprocess", "refused"),
        ("", "", "http", "dlq.reprocess", "refused"),
        ("vic", "viewer", "http", "dlq.reprocess", "refused"),
        ("vic", "viewer", "cli", "dlq.discard", "refused"),
        ("olga", "operator", "cli", "dlq.revalidate", "refused"),
    ]
    assert ("olga", "operator", "cli", "dlq.discard", "ok") in audit
    assert ("erik", "engineer", "cli", "dlq.revalidate", "ok") in audit
    assert "oper-tok" not in read.stdout and "oper-tok" not in gw.log()
    assert gw.stop() == 0


def high(seq: int, state: AlarmState, **kw) -> Alarm:
    return Alarm(
        alarm_id="pump-1:flow_high",
        occurrence_id="o1",
        seq=seq,
        asset_id="pump-1",
        parameter="flow",
        state=state,
        severity=AlarmSeverity.HIGH,
        area="hall-a",
        active=True,
        acked=state is not AlarmState.ACTIVE_UNACKED,
        gateway_time=seq,
        **kw,
    )


def test_alarm_table_actions_and_metrics(gateway, tmp_path) -> None:
    gw = gateway(config(100.0))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, "ready")
    res = otgate(gw, "alarms", "list", token="view-tok")
    assert res.returncode == 0 and "(no alarms)" in res.stdout, res.stderr
    assert otgate(gw, "alarms", "list").returncode == 3  # no token
    res = otgate(gw, "alarms", "ack", "pump-1:flow_high", "--note", "x", token="view-tok")
    assert res.returncode == 3 and "needs operator" in res.stderr
    res = otgate(gw, "alarms", "ack", "pump-1:flow_high", token="oper-tok")
    assert res.returncode == 1 and "no alarm 'pump-1:flow_high'" in res.stderr
    res = otgate(gw, "alarms", "shelve", "pump-1:flow_high", "--for", "soon", token="oper-tok")
    assert res.returncode == 2 and "expected seconds" in res.stderr  # argparse refuses it
    status, body = gw.post("/alarms/explode", {"alarm_ids": ["x"]}, token="oper-tok")
    assert status == 400 and "expected one of ack" in body
    metrics = gw.get("/metrics")[1]
    assert 'otgate_alarms{severity="HIGH",state="ACTIVE_UNACKED"} 0.0' in metrics
    assert 'otgate_alarms_unacknowledged{severity="CRITICAL"} 0.0' in metrics

    # An alarm appears on alarms.clean: the table, its filters and /metrics follow.
    state_dir = tmp_path / "state"
    write_alarms(state_dir, [high(1, AlarmState.ACTIVE_UNACKED)])
    wait_for(
        lambda: 'otgate_alarms_unacknowledged{severity="HIGH"} 1.0' in gw.get("/metrics")[1],
        20,
        "alarm gauges",
    )
    res = otgate(
        gw, "alarms", "list", "--state", "active_unacked", "--area", "hall-*", token="view-tok"
    )
    assert "pump-1:flow_high" in res.stdout and "ACTIVE_UNACKED" in res.stdout, res.stderr
    res = otgate(gw, "alarms", "list", "--severity", "LOW", "--json", token="view-tok")
    assert json.loads(res.stdout) == {"alarms": []}

    # Ack: the command is written; no evaluator here, so "accepted" (HTTP 202).
    res = otgate(
        gw,
        "alarms",
        "ack",
        "pump-1:flow_high",
        "--note",
        "looking",
        "--request-id",
        "r-7",
        "--wait",
        "0.3",
        token="oper-tok",
    )
    assert res.returncode == 0 and "accepted, not yet applied" in res.stdout, res.stderr
    status, body = gw.post(
        "/alarms/ack",
        {"alarm_ids": ["pump-1:flow_high"], "request_id": "r-7", "wait_s": 0.1},
        token="oper-tok",
    )
    assert status == 202 and body["targeted"] == ["pump-1:flow_high"]
    cmds = read_topic(state_dir, "alarms.commands")
    assert [(c.request_id, c.by, c.note, c.source.split(":")[0]) for c in cmds] == [
        ("r-7", "olga", "looking", "cli")
    ]
    # The evaluator's transition arrives: the same request is now "applied".
    write_alarms(
        state_dir, [high(2, AlarmState.ACTIVE_ACKED, event="ack", by="olga", request_id="r-7")]
    )
    res = otgate(
        gw, "alarms", "ack", "pump-1:flow_high", "--request-id", "r-7", "--json", token="oper-tok"
    )
    doc = json.loads(res.stdout)
    assert doc["status"] == "applied" and doc["transitions"][0]["state"] == "ACTIVE_ACKED"
    res = otgate(gw, "alarms", "show", "pump-1:flow_high", token="view-tok")
    assert "ACTIVE_ACKED" in res.stdout and "olga" in res.stdout
    assert len(read_topic(state_dir, "alarms.commands")) == 1
    # A component restart goes through the same service: refused, then done, audited.
    assert gw.post("/components/a/restart", token="view-tok")[0] == 403
    assert gw.post("/components/nope/restart", token="oper-tok")[0] == 404
    assert gw.post("/components/a/restart", token="oper-tok")[0] == 200
    audit = [(a.who, a.action, a.result) for a in read_topic(state_dir, "logs.audit")]
    assert audit[-3:] == [
        ("vic", "component.restart", "refused"),
        ("olga", "component.restart", "error: unknown"),
        ("olga", "component.restart", "ok"),
    ]
    assert ("vic", "alarms.ack", "refused") in audit
    assert audit.count(("olga", "alarms.ack", "ok")) == 3
    assert gw.stop() == 0


def reprocessed_so_far(state_dir) -> int:
    return sum(
        1 for d in read_topic(state_dir, "dlq.dispositions") if d.state.value == "REPROCESSED"
    )


def dispositions_written(state_dir) -> int:
    """Records on ``dlq.dispositions`` so far: one cheap query, no decoding, so the
    test sees the bulk's progress within a poll instead of after a full read."""
    con = sqlite3.connect(f"file:{state_dir / LogConfig().path}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute(
            "SELECT COALESCE(SUM(p.next_offset), 0) FROM partitions p"
            " JOIN topics t ON t.tid = p.tid WHERE t.name = 'dlq.dispositions'"
        ).fetchone()
    finally:
        con.close()
    return int(row[0])


def test_gateway_killed_mid_bulk_reprocess_resumes_without_duplicates(gateway, tmp_path) -> None:
    state_dir = tmp_path / "state"
    seed_letters(state_dir, SEEDED)
    gw = gateway(config(1000.0))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, "ready")
    bulk = subprocess.Popen(
        [sys.executable, "-m", "otgate.supervisors.cli", "dlq", "revalidate"],
        env={**os.environ, "OTGATE_STATUS_URL": gw.url, "OTGATE_TOKEN": "eng-tok"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Past the first chunk (its intents and its done records) and far from the
        # end (two records per letter): a power cut in the middle of the bulk.
        wait_for(lambda: dispositions_written(state_dir) >= 1_000, 60, "the bulk under way")
        gw.kill()
    finally:
        _, err = bulk.communicate(timeout=60)
    done_before = reprocessed_so_far(state_dir)
    assert 0 < done_before < SEEDED and bulk.returncode == 2, err  # the CLI lost the gateway

    gw.start()
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, "ready after the crash")
    res = otgate(gw, "dlq", "revalidate", "--json", token="eng-tok")
    assert res.returncode == 0, res.stderr
    counts = json.loads(res.stdout)["counts"]
    assert counts.get("resumed", 0) + counts["reprocessed"] + done_before == SEEDED, counts
    seen = collections.Counter(
        r.seq for r in read_topic(state_dir, "telemetry.clean") if r.adapter_id == "seed"
    )
    assert len(seen) == SEEDED and set(seen.values()) == {1}  # every one, exactly once
    assert reprocessed_so_far(state_dir) == SEEDED
    assert gw.stop() == 0
