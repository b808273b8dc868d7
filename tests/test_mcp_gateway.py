"""The MCP tool surface against a real ``otgate run``: the ``mcp`` package's own
client over stdio (``otgate mcp``) and over streamable HTTP (``otgate mcp
--http``) lists and calls the tools; actions are refused without a
confirmation, with a token from another call or session, and for a weak
role (403 from the gateway, audited there); every call is in ``logs.audit``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from mcp.client.streamable_http import streamable_http_client
from peers.gateway import gateway_fixture, synthetic, wait_for  # noqa: F401
from peers.postgres import pg_dsn_fixture, pg_server_fixture  # noqa: F401
from test_ops_gateway import high, read_topic, write_alarms

from otgate.actors.records import AlarmState

ADMIN_SECRET = "s3cret-admin-token-value"
PG_SECRET = "pg-s3cret-password"
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
    "device_shadow",
}
ANALYSIS = {"diagnose_gateway", "dlq_summary", "suggest_config_change"}
ACTIONS = {"restart_component", "ack_alarm", "approve_dlq", "write_point"}
HTTP = ("--http", "127.0.0.1:0")


def config(pg_dsn: str) -> str:
    return f"""
[gateway]
id = "mcp"
fault_injection = true
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 2.0
[status]
tokens = [
  {{ token = "view-tok", role = "viewer", name = "vic" }},
  {{ token = "oper-tok", role = "operator", name = "olga" }},
  {{ token = "${{secret:admin_token}}", role = "admin", name = "ada" }},
]
[processing.validator]
rules = [{{ parameter = "flow", max = 22.0, on_out_of_range = "reject" }}]
[processing.aggregator]
enabled = false
[[sinks]]
type = "postgres"
id = "pg"
dsn = "{pg_dsn} password=${{secret:pg_password}}"
db_schema = "mcp"
""" + synthetic("a", "pump-1", 0.05)


@pytest.fixture(name="gw")
def gw_fixture(gateway, pg_dsn: str, tmp_path: Path):
    """A gateway with a synthetic adapter whose readings half fail validation,
    a Postgres sink (trust auth: the password is only there to be hidden),
    an active alarm, and bulkhead ``a`` that has crashed once (fault injection)."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "admin_token").write_text(ADMIN_SECRET)
    (creds / "pg_password").write_text(PG_SECRET)
    gw = gateway(config(pg_dsn), env={"CREDENTIALS_DIRECTORY": str(creds)})
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, "ready")
    assert gw.post("/faults", {"kind": "exit", "bulkhead": "a"}, token=ADMIN_SECRET)[0] == 200
    wait_for(
        lambda: gw.component("a")["restarts"] >= 1 and gw.component("a")["state"] == "RUNNING",
        60,
        "bulkhead a back after its crash",
    )
    write_alarms(tmp_path / "state", [high(1, AlarmState.ACTIVE_UNACKED)])
    return gw


class Calls:
    """Tool calls on one client session; keeps every answer's text so the test
    can check that none carries a credential."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self.texts: list[str] = []

    async def _call(self, tool: str, args: dict) -> tuple[bool, str]:
        result = await self.session.call_tool(tool, args)
        text = result.content[0].text
        self.texts.append(text)
        return bool(result.is_error), text

    async def ok(self, tool: str, **args) -> dict:
        failed, text = await self._call(tool, args)
        assert not failed, text
        return json.loads(text)

    async def fails(self, tool: str, **args) -> str:
        failed, text = await self._call(tool, args)
        assert failed, text
        return text

    async def confirmed(self, tool: str, **args) -> dict:
        first = await self.ok(tool, **args)
        assert first["status"] == "needs_confirmation" and not first["done"]
        return await self.ok(tool, **args, confirmation=first["confirmation"])


class Person:
    """The person behind the MCP client: answers each confirmation request the
    server sends (elicitation) with the next of ``answers``."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def __call__(self, context, params) -> types.ElicitResult:
        self.asked.append(params.message)
        action = self.answers.pop(0)
        return types.ElicitResult(
            action=action, content={"confirm": True} if action == "accept" else None
        )


def pid_of(gw, bulkhead: str) -> int:
    return next(c["pid"] for c in gw.health()["components"] if c["id"] == bulkhead)


def env_for(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OTGATE_TOKEN"}
    return {**env, "OTGATE_TOKEN": token}


async def reads(c: Calls, pid: int) -> str:
    """Every read and analysis tool; returns a dead letter's id."""
    tools = {t.name: t for t in (await c.session.list_tools()).tools}
    assert set(tools) == READ_TOOLS | ANALYSIS | ACTIONS
    assert tools["config"].annotations.read_only_hint
    assert "confirmation" in tools["restart_component"].input_schema["properties"]

    status = await c.ok("gateway_status")
    assert status["gateway"] == "mcp" and status["bulkheads"][0]["id"] == "a"
    comp = await c.ok("component_status", component="a")
    assert comp["state"] == "RUNNING" and comp["pid"] == pid
    assert "no component 'nope'" in await c.fails("component_status", component="nope")
    with anyio.fail_after(30):  # the sink connects when the first batch is due, and
        while True:  # its lag is measured once a second (None until the first measure)
            first_sink = (await c.ok("sink_status"))[0]
            if first_sink["connected"] and first_sink["lag_records"] is not None:
                break
            await anyio.sleep(0.2)
    (sink,) = await c.ok("sink_status")
    assert (sink["sink"], sink["kind"], sink["state"]) == ("pg/sink.pg", "sink.postgres", "RUNNING")
    assert sink["lag_records"] >= 0 and sink["last_error"] is None
    found = await c.ok("alarms", state="ACTIVE_UNACKED")
    assert [a["alarm_id"] for a in found["alarms"]] == ["pump-1:flow_high"]

    with anyio.fail_after(30):
        while (await c.ok("dlq_messages", limit=5))["total"] < 3:
            await anyio.sleep(0.2)
    first = (await c.ok("dlq_messages", limit=5))["letters"][0]["id"]
    shown = await c.ok("dlq_message", letter_id=first)
    assert shown["letter"]["reason"].startswith("out_of_range")
    summary = await c.ok("dlq_summary")
    top = summary["patterns"][0]
    assert (top["reason"], top["point"]) == ("out_of_range", "pump-1/flow")
    assert top["count"] == summary["letters"] >= 3

    running = (await c.ok("config"))["config"]
    tokens = running["status"]["tokens"]
    assert {t["token"] for t in tokens} == {"***"}
    assert running["sinks"][0]["dsn"].endswith(" password=***")
    assert [t["name"] for t in tokens] == ["vic", "olga", "ada"]
    schemas = await c.ok("schemas", topic="logs.audit")
    assert list(schemas) == ["logs.audit"] and schemas["logs.audit"]["record"] == "AuditRecord"
    assert "no topic" in await c.fails("schemas", topic="nope")
    assert isinstance((await c.ok("logs", topic="logs.gateway"))["records"], list)
    assert "expected one of logs.gateway" in await c.fails("logs", topic="telemetry.raw")
    samples = await c.ok("metrics", prefix="otgate_alarms")
    assert any('severity="HIGH"' in line for line in samples)
    diag = await c.ok("diagnose_gateway")
    assert diag["alarms"]["active_or_unacked"] == 1 and diag["status"] == status["status"]
    crashed = next(f for f in diag["findings"] if f["component"] == "a")
    assert crashed["restarts"] >= 1 and crashed["last_error"] and crashed["likely_cause"]
    assert crashed["last_error_age_s"] >= 0

    diff = await c.ok("suggest_config_change", changes={"adapters[0].interval": 0.5})
    assert diff["applied"] is False and diff["valid"], diff["problems"]
    assert '-      "interval": 0.05' in diff["diff"] and '+      "interval": 0.5' in diff["diff"]
    bad = await c.ok("suggest_config_change", changes={"adapters[0].interval": "soon"})
    assert bad["valid"] is False and "adapters[0].interval" in bad["problems"][0]
    cred = {"status.tokens[1].token": "mine"}
    assert "credentials cannot be suggested" in await c.fails("suggest_config_change", changes=cred)
    return first


async def actions(c: Calls, gw, pid: int, letter: str, person: Person) -> None:
    """A first call only previews; a wrong or spent token does nothing, nor does a
    person's no; confirmed by token and person, it runs."""
    pre = await c.ok("restart_component", component="a")
    assert pre["status"] == "needs_confirmation" and pre["preview"]["pid"] == pid
    token = pre["confirmation"]
    assert "not done: unknown" in await c.fails(
        "restart_component", component="a", confirmation="guess"
    )
    assert "other arguments" in await c.fails(
        "restart_component", component="b", confirmation=token
    )
    assert "already used" in await c.fails("restart_component", component="a", confirmation=token)
    assert person.asked == []  # refused before anyone was asked
    token = (await c.ok("restart_component", component="a"))["confirmation"]
    assert "the person did not confirm (decline)" in await c.fails(
        "restart_component", component="a", confirmation=token
    )
    assert 'restart_component {"component": "a"}' in person.asked[0]
    assert f'"pid": {pid}' in person.asked[0]
    assert pid_of(gw, "a") == pid

    done = await c.confirmed("restart_component", component="a")
    assert done["status"] == "done" and done["result"]["result"]
    ack = await c.confirmed("ack_alarm", alarm_ids=["pump-1:flow_high"], note="seen")
    assert ack["result"]["targeted"] == ["pump-1:flow_high"]  # no evaluator: accepted
    assert "expected a letter id" in await c.fails("approve_dlq", letter_ids=["../faults"])
    approve = await c.confirmed("approve_dlq", letter_ids=[letter])
    assert approve["result"]["counts"] == {"refused": 1}  # still out of range
    recent = await c.ok("logs", topic="logs.audit", limit=5)
    assert len(recent["records"]) == 5 and recent["records"][-1]["who"] == "olga"


def test_stdio_session_reads_analyses_and_confirms_actions(gw, tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "otgate.supervisors.cli", "mcp", "--url", gw.url],
        env=env_for("oper-tok"),
    )
    pid = pid_of(gw, "a")
    person = Person("decline", "accept", "accept", "accept")

    async def session(errlog) -> list[str]:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, elicitation_callback=person) as s:
                await s.initialize()
                c = Calls(s)
                letter = await reads(c, pid)
                await actions(c, gw, pid, letter, person)
                return c.texts + person.asked

    with (tmp_path / "mcp.stderr").open("w") as errlog:
        texts = anyio.run(session, errlog)
    wait_for(lambda: pid_of(gw, "a") not in (None, pid), 30, "bulkhead a restarted")
    for text in texts:
        for secret in (ADMIN_SECRET, PG_SECRET, "oper-tok", "view-tok"):
            assert secret not in text

    audit = [
        (a.who, a.surface, a.action, a.target, a.result)
        for a in read_topic(tmp_path / "state", "logs.audit")
    ]
    assert all(who == "olga" and surface == "mcp" for who, surface, *_ in audit)
    assert ("olga", "mcp", "mcp.gateway_status", "", "ok") in audit
    assert ("olga", "mcp", "mcp.schemas", "nope", "error: HTTP 404") in audit
    assert ("olga", "mcp", "mcp.approve_dlq", "../faults", "error: bad arguments") in audit
    assert ("olga", "mcp", "mcp.restart_component", "a", "preview") in audit
    refused = [a for a in audit if a[2] == "mcp.restart_component" and a[4] == "refused"]
    assert len(refused) == 4
    # The executed actions are audited once, by the gateway's service layer.
    assert [a for a in audit if a[2] == "component.restart"] == [
        ("olga", "mcp", "component.restart", "a", "ok")
    ]
    assert {"alarms.ack", "dlq.reprocess"} <= {a[2] for a in audit}
    assert not [a for a in audit if a[2] in ("mcp.ack_alarm", "mcp.approve_dlq") and a[4] == "ok"]
    assert "oper-tok" not in gw.log()


def test_http_sessions_weak_role_and_session_bound_tokens(gw, tmp_path: Path) -> None:
    """HTTP sessions on one ``otgate mcp --http``, each client with its own gateway
    token (the server holds none): no token, no answer; confirmation tokens do
    not cross sessions; a client that cannot ask its person cannot act; a
    viewer's person may say yes, the gateway still refuses (403). Then
    ``--confirm token`` (stdio): the token alone reaches the gateway."""
    errfile = tmp_path / "mcp-http.stderr"
    with errfile.open("w") as err:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "otgate.supervisors.cli", "mcp", "--url", gw.url, *HTTP],
            env=env_for(""),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    person = Person("accept")
    pid = pid_of(gw, "a")
    restart = {"component": "a"}

    @contextlib.asynccontextmanager
    async def client(url: str, token: str):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            streamable_http_client(url, http_client=http) as streams,
        ):
            yield streams

    async def sessions(url: str) -> None:
        async with client(url, "") as (r0, w0), ClientSession(r0, w0) as s0:
            await s0.initialize()
            assert "HTTP 401" in await Calls(s0).fails("gateway_status")
        async with (
            client(url, "view-tok") as (r1, w1),
            ClientSession(r1, w1, elicitation_callback=person) as s1,
        ):
            await s1.initialize()
            one = Calls(s1)
            names = {t.name for t in (await s1.list_tools()).tools}
            assert names == READ_TOOLS | ANALYSIS | ACTIONS
            assert (await one.ok("gateway_status"))["gateway"] == "mcp"
            token = (await one.ok("restart_component", **restart))["confirmation"]
            async with client(url, "view-tok") as (r2, w2), ClientSession(r2, w2) as s2:
                await s2.initialize()
                two = Calls(s2)
                assert "another MCP session" in await two.fails(
                    "restart_component", **restart, confirmation=token
                )
                own = (await two.ok("restart_component", **restart))["confirmation"]
                assert "this client cannot ask one" in await two.fails(
                    "restart_component", **restart, confirmation=own
                )
            # The viewer's person says yes; the gateway refuses the action itself.
            own = (await one.ok("restart_component", **restart))["confirmation"]
            text = await one.fails("restart_component", **restart, confirmation=own)
            assert "HTTP 403" in text and "needs operator" in text and person.asked

    async def token_only() -> None:
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "otgate.supervisors.cli", "mcp", "--url", gw.url, "--confirm", "token"],
            env=env_for("view-tok"),
        )
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            text = await Calls(s).fails(
                "restart_component",
                **restart,
                confirmation=(await Calls(s).ok("restart_component", **restart))["confirmation"],
            )
            assert "HTTP 403" in text

    try:
        found = wait_for(
            lambda: re.search(r"mcp_listening url=(\S+)", errfile.read_text()), 30, "mcp listening"
        )
        anyio.run(sessions, found.group(1))
        rebound = urllib.request.Request(  # a web page that rebinds a name to loopback
            found.group(1),
            data=b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}',
            method="POST",
            headers={
                "Host": "evil.example",
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
            },
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=10)
        assert refused.value.code == 421
        anyio.run(token_only)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert pid_of(gw, "a") == pid
    audit = [
        (a.who, a.role, a.surface, a.action, a.result)
        for a in read_topic(tmp_path / "state", "logs.audit")
    ]
    assert audit.count(("vic", "viewer", "mcp", "component.restart", "refused")) == 2
    assert audit.count(("vic", "viewer", "mcp", "mcp.restart_component", "refused")) == 2
    assert ("vic", "viewer", "mcp", "mcp.gateway_status", "ok") in audit
