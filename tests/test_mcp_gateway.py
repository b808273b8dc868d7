"""The MCP tool surface against a real ``otgate run``: the ``mcp`` package's own
client over stdio (``otgate mcp``) and over streamable HTTP (``otgate mcp
--http``) lists and calls the tools; actions are refused without a
confirmation, with a token from another call or session, and for a weak
role (403 from the gateway, audited there); every call is in ``logs.audit``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from peers.gateway import gateway_fixture, synthetic, wait_for  # noqa: F401
from test_ops_gateway import high, read_topic, write_alarms

from otgate.actors.records import AlarmState

ADMIN_SECRET = "s3cret-admin-token-value"
READ_TOOLS = {
    "gateway_status",
    "component_status",
    "sink_status",
    "alarms",
    "dlq_messages",
    "dlq_message",
    "config",
    "schemas",
    "logs",
    "metrics",
}
ANALYSIS = {"diagnose_gateway", "dlq_summary", "suggest_config_change"}
ACTIONS = {"restart_component", "ack_alarm", "approve_dlq"}


def config() -> str:
    return """
[gateway]
id = "mcp"
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 2.0
[status]
tokens = [
  { token = "view-tok", role = "viewer", name = "vic" },
  { token = "oper-tok", role = "operator", name = "olga" },
  { token = "${secret:admin_token}", role = "admin", name = "ada" },
]
[processing.validator]
rules = [{ parameter = "flow", max = 18.0, on_out_of_range = "reject" }]
[processing.aggregator]
enabled = false
""" + synthetic("a", "pump-1", 0.05)


@pytest.fixture(name="gw")
def gw_fixture(gateway, tmp_path: Path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "admin_token").write_text(ADMIN_SECRET)
    gw = gateway(config(), env={"CREDENTIALS_DIRECTORY": str(creds)})
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, "ready")
    write_alarms(tmp_path / "state", [high(1, AlarmState.ACTIVE_UNACKED)])
    return gw


def doc(result) -> dict:
    assert not result.is_error, result.content[0].text
    return json.loads(result.content[0].text)


def error(result) -> str:
    assert result.is_error, result.content[0].text
    return result.content[0].text


def pid_of(gw, bulkhead: str) -> int:
    return next(c["pid"] for c in gw.health()["components"] if c["id"] == bulkhead)


async def confirmed(session: ClientSession, tool: str, args: dict) -> dict:
    first = doc(await session.call_tool(tool, args))
    assert first["status"] == "needs_confirmation" and not first["done"]
    return doc(await session.call_tool(tool, {**args, "confirmation": first["confirmation"]}))


def env_for(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OTGATE_TOKEN"}
    return {**env, "OTGATE_TOKEN": token}


def test_stdio_session_reads_analyses_and_confirms_actions(gw, tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "otgate.supervisors.cli", "mcp", "--url", gw.url],
        env=env_for("oper-tok"),
    )
    pid_before = pid_of(gw, "a")

    async def session_run() -> list[str]:
        texts = []
        with open(tmp_path / "mcp.stderr", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as s:
                    await s.initialize()
                    tools = {t.name: t for t in (await s.list_tools()).tools}
                    assert set(tools) == READ_TOOLS | ANALYSIS | ACTIONS
                    assert tools["config"].annotations.read_only_hint
                    assert "confirmation" in tools["restart_component"].input_schema["properties"]

                    status = doc(await s.call_tool("gateway_status", {}))
                    assert status["gateway"] == "mcp" and status["bulkheads"][0]["id"] == "a"
                    comp = doc(await s.call_tool("component_status", {"component": "a"}))
                    assert comp["state"] == "RUNNING" and comp["pid"] == pid_before
                    assert "no component" in error(
                        await s.call_tool("component_status", {"component": "nope"})
                    )
                    assert doc(await s.call_tool("sink_status", {})) == []
                    found = doc(await s.call_tool("alarms", {"state": "ACTIVE_UNACKED"}))
                    assert [a["alarm_id"] for a in found["alarms"]] == ["pump-1:flow_high"]

                    async def letters() -> dict:
                        return doc(await s.call_tool("dlq_messages", {"limit": 5}))

                    with anyio.fail_after(30):
                        while (await letters())["total"] < 3:
                            await anyio.sleep(0.2)
                    listed = await letters()
                    first = listed["letters"][0]["id"]
                    shown = doc(await s.call_tool("dlq_message", {"letter_id": first}))
                    assert shown["letter"]["reason"].startswith("out_of_range")
                    summary = doc(await s.call_tool("dlq_summary", {}))
                    top = summary["patterns"][0]
                    assert (top["reason"], top["point"]) == ("out_of_range", "pump-1/flow")
                    assert top["count"] == summary["letters"] >= 3

                    cfg = await s.call_tool("config", {})
                    texts.append(cfg.content[0].text)
                    tokens = doc(cfg)["config"]["status"]["tokens"]
                    assert {t["token"] for t in tokens} == {"***"}
                    assert [t["name"] for t in tokens] == ["vic", "olga", "ada"]
                    schemas = doc(await s.call_tool("schemas", {"topic": "logs.audit"}))
                    assert schemas["logs.audit"]["record"] == "AuditRecord"
                    assert "not in" not in json.dumps(schemas)
                    samples = doc(await s.call_tool("metrics", {"prefix": "otgate_alarms"}))
                    assert any('severity="HIGH"' in line for line in samples)
                    diag = doc(await s.call_tool("diagnose_gateway", {}))
                    assert diag["alarms"]["active_or_unacked"] == 1
                    assert diag["status"] == status["status"]

                    change = {"changes": {"adapters[0].interval": 0.5}, "reason": "slower"}
                    diff = doc(await s.call_tool("suggest_config_change", change))
                    assert diff["applied"] is False and diff["valid"], diff["problems"]
                    assert '-      "interval": 0.05' in diff["diff"]
                    assert '+      "interval": 0.5' in diff["diff"]
                    bad = {"changes": {"adapters[0].interval": "soon"}}
                    assert doc(await s.call_tool("suggest_config_change", bad))["valid"] is False
                    cred = {"changes": {"status.tokens[1].token": "mine"}}
                    assert "credentials cannot be suggested" in error(
                        await s.call_tool("suggest_config_change", cred)
                    )

                    # Actions: a first call only previews; a wrong token does nothing.
                    pre = doc(await s.call_tool("restart_component", {"component": "a"}))
                    assert pre["status"] == "needs_confirmation"
                    assert pre["preview"]["pid"] == pid_before and pre["confirmation"]
                    assert "not done: unknown" in error(
                        await s.call_tool(
                            "restart_component", {"component": "a", "confirmation": "guess"}
                        )
                    )
                    other = {"component": "b", "confirmation": pre["confirmation"]}
                    assert "other arguments" in error(
                        await s.call_tool("restart_component", other)
                    )  # and the token is spent:
                    again = {"component": "a", "confirmation": pre["confirmation"]}
                    assert "already used" in error(await s.call_tool("restart_component", again))
                    assert pid_of(gw, "a") == pid_before

                    done = await confirmed(s, "restart_component", {"component": "a"})
                    assert done["status"] == "done" and done["result"]["result"]
                    ack = await confirmed(
                        s, "ack_alarm", {"alarm_ids": ["pump-1:flow_high"], "note": "seen"}
                    )
                    assert ack["result"]["targeted"] == ["pump-1:flow_high"]
                    approve = await confirmed(s, "approve_dlq", {"letter_ids": [first]})
                    assert approve["result"]["counts"] == {"refused": 1}  # still out of range

                    recent = doc(await s.call_tool("logs", {"topic": "logs.audit", "limit": 5}))
                    assert len(recent["records"]) == 5
                    texts.append(json.dumps(recent))
        return texts

    texts = anyio.run(session_run)
    wait_for(lambda: pid_of(gw, "a") not in (None, pid_before), 30, "bulkhead a restarted")
    for text in texts:
        assert ADMIN_SECRET not in text and "oper-tok" not in text and "view-tok" not in text

    audit = [
        (a.who, a.surface, a.action, a.target, a.result)
        for a in read_topic(tmp_path / "state", "logs.audit")
    ]
    assert all(who == "olga" and surface == "mcp" for who, surface, *_ in audit)
    assert ("olga", "mcp", "mcp.gateway_status", "", "ok") in audit
    assert ("olga", "mcp", "mcp.restart_component", "a", "preview") in audit
    refused = [a for a in audit if a[2] == "mcp.restart_component" and a[4] == "refused"]
    assert len(refused) == 3
    assert ("olga", "mcp", "component.restart", "a", "ok") in audit  # by the service layer
    assert ("olga", "mcp", "dlq.reprocess") in {a[:3] for a in audit}
    assert ("olga", "mcp", "alarms.ack") in {a[:3] for a in audit}
    assert [a for a in audit if a[2] == "component.restart"] == [
        ("olga", "mcp", "component.restart", "a", "ok")
    ]
    assert "oper-tok" not in gw.log()


def test_http_sessions_weak_role_and_session_bound_tokens(gw, tmp_path: Path) -> None:
    errfile = tmp_path / "mcp-http.stderr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "otgate.supervisors.cli", "mcp", "--url", gw.url]
        + ["--http", "127.0.0.1:0"],
        env=env_for("view-tok"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=errfile.open("w"),
    )
    try:
        found = wait_for(
            lambda: re.search(r"mcp_listening url=(\S+)", errfile.read_text()), 30, "mcp listening"
        )
        url = found.group(1)
        pid_before = pid_of(gw, "a")

        async def sessions() -> None:
            async with streamable_http_client(url) as (r1, w1), ClientSession(r1, w1) as one:
                await one.initialize()
                assert {t.name for t in (await one.list_tools()).tools} == READ_TOOLS | ANALYSIS | ACTIONS
                assert doc(await one.call_tool("gateway_status", {}))["gateway"] == "mcp"
                pre = doc(await one.call_tool("restart_component", {"component": "a"}))
                token = pre["confirmation"]
                async with streamable_http_client(url) as (r2, w2), ClientSession(r2, w2) as two:
                    await two.initialize()
                    args = {"component": "a", "confirmation": token}
                    assert "another MCP session" in error(
                        await two.call_tool("restart_component", args)
                    )
                pre = doc(await one.call_tool("restart_component", {"component": "a"}))
                args = {"component": "a", "confirmation": pre["confirmation"]}
                text = error(await one.call_tool("restart_component", args))
                assert "HTTP 403" in text and "needs operator" in text

        anyio.run(sessions)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert pid_of(gw, "a") == pid_before
    audit = [
        (a.who, a.role, a.surface, a.action, a.result)
        for a in read_topic(tmp_path / "state", "logs.audit")
    ]
    assert ("vic", "viewer", "mcp", "component.restart", "refused") in audit
    assert ("vic", "viewer", "mcp", "mcp.restart_component", "refused") in audit
    assert ("vic", "viewer", "mcp", "mcp.gateway_status", "ok") in audit
