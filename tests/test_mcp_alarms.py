"""The MCP ``ack_alarm`` tool acknowledges the activation its preview showed, as
the console and ``otgate alarms ack ALARM#N`` do: on a real ``otgate run`` with
the alarm evaluator, an alarm that cleared and was raised again between the
proposal and its confirmation is not acked (the evaluator refuses the old
activation); a fresh proposal acks the new one."""

from __future__ import annotations

import sys

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from peers.gateway import gateway_fixture, wait_for  # noqa: F401
from test_alarms_e2e import ALARM, CONFIG, journal, peers_fixture, state_of  # noqa: F401
from test_mcp_gateway import Calls, Person, env_for


def test_ack_alarm_acks_the_activation_its_preview_showed(peers, gateway, tmp_path) -> None:
    state = tmp_path / "state"
    peers.set_temp(20)
    gw = gateway(CONFIG.format(state=state, modbus=peers.modbus_port, hook=peers.hook_url))
    wait_for(gw.ready, 60, "the gateway ready")
    peers.set_temp(95)
    wait_for(lambda: state_of(gw) == "ACTIVE_UNACKED", 30, "the raise")
    first, now = f"{ALARM}#1", f"{ALARM}#3"
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "otgate.supervisors.cli", "mcp", "--url", gw.url],
        env=env_for("oper-tok"),
    )
    person = Person("accept", "accept", "accept")

    def clear_and_raise_again() -> None:
        peers.set_temp(30)
        wait_for(lambda: state_of(gw) == "CLEARED_UNACKED", 30, "the clear")
        peers.set_temp(96)
        wait_for(lambda: state_of(gw) == "ACTIVE_UNACKED", 30, "the second raise")

    async def session(errlog) -> None:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, elicitation_callback=person) as s,
        ):
            await s.initialize()
            c = Calls(s)
            pre = await c.ok("ack_alarm", alarm_ids=[ALARM], note="seen")
            assert [a["occurrence_id"] for a in pre["preview"]] == [first]
            assert pre["bound_to"] == {ALARM: first}
            await anyio.to_thread.run_sync(clear_and_raise_again)

            late = await c.ok("ack_alarm", alarm_ids=[ALARM], note="seen",
                              confirmation=pre["confirmation"])
            assert late["done"] and late["result"]["status"] == "refused", late
            assert late["result"]["refused"] == {ALARM: f"activation {first} is over (now {now})"}
            assert first in person.asked[0] and now in person.asked[0]  # proposed vs now
            # Naming the old activation (ALARM#N) binds to it whatever the preview shows.
            named = await c.confirmed("ack_alarm", alarm_ids=[first])
            assert named["result"]["status"] == "refused", named
            # A new proposal shows the activation now, and acks that one.
            acked = await c.confirmed("ack_alarm", alarm_ids=[ALARM], note="seen again")
            assert acked["result"]["status"] == "applied", acked
            (t,) = acked["result"]["transitions"]
            assert (t["event"], t["occurrence_id"], t["state"]) == ("ack", now, "ACTIVE_ACKED")

    with (tmp_path / "mcp.stderr").open("w") as errlog:
        anyio.run(session, errlog)
    assert journal(state, answers=True) == [
        (1, "raise", "ACTIVE_UNACKED"), (2, "clear", "CLEARED_UNACKED"),
        (3, "raise", "ACTIVE_UNACKED"), (3, "refused:ack", "ACTIVE_UNACKED"),
        (3, "refused:ack", "ACTIVE_UNACKED"), (4, "ack", "ACTIVE_ACKED"),
    ]
