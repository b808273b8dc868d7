"""The MCP ``write_point`` and ``device_shadow`` tools against a real ``otgate
run`` writing to pymodbus' real server, through ``otgate mcp`` over stdio: the
first call only previews (limits, role, reported and desired value) and writes
nothing; a wrong confirmation writes nothing; confirmed by token and person,
the value is WRITTEN at the device; the gateway refuses limits and a weak role
itself; the audit names the MCP surface."""

from __future__ import annotations

import json
import sys

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from peers.gateway import gateway_fixture, wait_for  # noqa: F401
from test_mcp_gateway import Calls, Person, env_for
from test_write_gateway import TOKENS, config, device_fixture, otgate  # noqa: F401

from otgate.protocols.modbus.config import Table

SETPOINT = {"asset": "press", "parameter": "setpoint"}


def server(gw, token: str, *extra: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "otgate.supervisors.cli", "mcp", "--url", gw.url, *extra],
        env=env_for(token),
    )


def test_write_point_is_confirmed_then_written_at_the_device(gateway, device, tmp_path) -> None:
    store = device.store
    store.set_registers(1, Table.HOLDING, 10, [30])  # 15.0 at scale 0.5
    gw = gateway(config(device.port))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, "ready")
    wait_for(
        lambda: gw.get("/assets/press/shadow", TOKENS["viewer"])[1]["reported"].get("setpoint"),
        what="a reading of the setpoint",
    )
    person = Person("accept", "accept")

    async def engineer(errlog) -> None:
        async with (
            stdio_client(server(gw, TOKENS["engineer"]), errlog=errlog) as (read, write),
            ClientSession(read, write, elicitation_callback=person) as s,
        ):
            await s.initialize()
            c = Calls(s)
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert tools["device_shadow"].annotations.read_only_hint
            assert "confirmation" in tools["write_point"].input_schema["properties"]
            shadow = await c.ok("device_shadow", asset="press")
            assert shadow["reported"]["setpoint"]["value"] == 15.0 and shadow["desired"] == {}
            assert "HTTP 404" in await c.fails("device_shadow", asset="nope")

            pre = await c.ok("write_point", **SETPOINT, value=42.5)
            assert pre["status"] == "needs_confirmation" and not pre["done"]
            shown = pre["preview"]
            assert shown["limits"] == {"min": 0.0, "max": 100.0, "allowed": None, "role": "engineer"}
            assert shown["can_write"] and shown["reported"]["value"] == 15.0
            assert shown["desired"] is None
            assert "not done: unknown" in await c.fails(
                "write_point", **SETPOINT, value=42.5, confirmation="guess"
            )
            assert "other arguments" in await c.fails(
                "write_point", **SETPOINT, value=43, confirmation=pre["confirmation"]
            )
            assert list(store.writes) == []  # nothing written without a confirmation
            assert person.asked == []

            done = await c.confirmed("write_point", **SETPOINT, value=42.5)
            assert done["done"] and done["result"]["status"] == "WRITTEN", done
            assert done["result"]["read_back"] == 42.5
            assert store.tables[1][Table.HOLDING][10] == 85
            assert '"reported"' in person.asked[0] and "write_point" in person.asked[0]
            shadow = await c.ok("device_shadow", asset="press")
            assert shadow["desired"]["setpoint"]["status"] == "WRITTEN"
            # The gateway checks the limits itself, confirmed or not.
            text = await c.fails(
                "write_point",
                **SETPOINT,
                value=140,
                confirmation=(await c.ok("write_point", **SETPOINT, value=140))["confirmation"],
            )
            assert "HTTP 422" in text and "above max 100" in text

    async def operator() -> None:  # --confirm token: no person, the token alone
        params = server(gw, TOKENS["operator"], "--confirm", "token")
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            c = Calls(s)
            pre = await c.ok("write_point", **SETPOINT, value=10)
            assert pre["preview"]["can_write"] is False
            text = await c.fails("write_point", **SETPOINT, value=10, confirmation=pre["confirmation"])
            assert "HTTP 403" in text and "needs engineer" in text

    with (tmp_path / "mcp.stderr").open("w") as errlog:
        anyio.run(engineer, errlog)
    anyio.run(operator)
    assert [w[3] for w in store.writes] == [[85]]  # once, the confirmed value

    audit = otgate("log", "read", "logs.audit", "--config", str(gw.config), "--json")
    rows = [json.loads(line) for line in audit.stdout.splitlines()]
    seen = [(r["who"], r["action"], r["target"], r["result"], r["surface"]) for r in rows]
    assert seen.count(("engineer-1", "point.write", "press/setpoint", "ok", "mcp")) == 1
    assert ("engineer-1", "point.write", "press/setpoint", "refused", "mcp") in seen
    assert ("operator-1", "point.write", "press/setpoint", "refused", "mcp") in seen
    assert ("engineer-1", "mcp.write_point", "press/setpoint", "preview", "mcp") in seen
    assert ("engineer-1", "mcp.device_shadow", "press", "ok", "mcp") in seen
