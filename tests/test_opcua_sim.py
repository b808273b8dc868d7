"""The OPC UA simulator, read by the OPC UA device session (both real)."""

from __future__ import annotations

import anyio
import msgspec
import pytest
from test_opcua_session import Collector, wait_until

from otgate.actors.context import BuildContext
from otgate.actors.messages import State
from otgate.actors.records import Quality
from otgate.protocols.opcua import OpcUaSource
from otgate.simulations.opcua_sim import OpcUaSimulator, run_opcua_simulator
from otgate.simulations.opcua_sim_config import OpcUaFaults, OpcUaSimConfig

pytestmark = pytest.mark.anyio


def sim_cfg(**faults: object) -> OpcUaSimConfig:
    return msgspec.convert(
        {
            "update_interval": 0.05,
            "generate": 3,
            "variables": [
                {"name": "Ramp", "signal": {"kind": "ramp", "rate_per_s": 10.0}},
                {
                    "name": "Motor",
                    "type": "int32",
                    "signal": {"kind": "states", "states": [0, 1], "mean_dwell_s": 0.2},
                },
                {
                    "name": "Trip",
                    "type": "boolean",
                    "signal": {"kind": "toggle", "on_s": 0.2, "off_s": 0.2},
                },
            ],
            "faults": faults,
        },
        OpcUaSimConfig,
    )


def session_cfg(url: str, names: list[str], mode: str = "subscription") -> OpcUaSource:
    return msgspec.convert(
        {
            "type": "opcua",
            "id": "sim",
            "endpoint": url,
            "mode": mode,
            "publishing_interval_ms": 50,
            "sampling_interval_ms": 20,
            "poll_interval_s": 0.1,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            "watchdog_interval_s": 0.5,
            "points": [
                {"node_id": OpcUaSimulator.node_id(n), "asset_id": "sim", "parameter": n}
                for n in names
            ],
        },
        OpcUaSource,
    )


async def test_simulated_signals_flow_and_restart_fault_recovers(tmp_path):
    handle: list[OpcUaSimulator] = []
    sink = Collector()
    async with anyio.create_task_group() as tg:
        url = await tg.start(
            lambda task_status: run_opcua_simulator(
                sim_cfg(), task_status=task_status, handle=handle
            )
        )
        assert url.startswith("opc.tcp://127.0.0.1:")
        names = ["Ramp", "Motor", "Trip", "gen00000", "gen00002"]
        session = session_cfg(url, names).build(
            BuildContext(gateway_id="gw", publish=sink.publish, state_dir=tmp_path)
        )
        await tg.start(session.run)
        await wait_until(lambda: len(sink.of("Ramp")) >= 5, what="ramp samples")
        ramp = [r.value for r in sink.of("Ramp")]
        assert ramp == sorted(ramp) and ramp[-1] > ramp[0]
        await wait_until(lambda: {r.value for r in sink.of("Trip")} == {True, False}, what="toggle")
        assert all(isinstance(r.value, int) for r in sink.of("Motor"))
        assert sink.last("gen00002") is not None

        await handle[0].restart(down_s=0.3)  # the fault the scheduler injects
        await wait_until(
            lambda: session.connects == 2 and session.state is State.RUNNING,
            within=15,
            what="reconnected",
        )
        n = len(sink.of("Ramp"))
        await wait_until(lambda: len(sink.of("Ramp")) > n + 3, what="flowing after restart")
        tg.cancel_scope.cancel()


async def test_bad_status_and_slow_reply_faults(tmp_path):
    handle: list[OpcUaSimulator] = []
    sink = Collector()
    cfg = sim_cfg(bad_status_probability=1.0, slow_reply_s=0.05, slow_probability=1.0)
    async with anyio.create_task_group() as tg:
        url = await tg.start(
            lambda task_status: run_opcua_simulator(cfg, task_status=task_status, handle=handle)
        )
        session = session_cfg(url, ["Ramp"], mode="polling").build(
            BuildContext(gateway_id="gw", publish=sink.publish, state_dir=tmp_path)
        )
        await tg.start(session.run)
        await wait_until(lambda: session.polls >= 3, what="polls")
        assert sink.last("Ramp").quality is Quality.BAD and sink.last("Ramp").value is None
        assert handle[0].requests_slowed >= 3
        tg.cancel_scope.cancel()


async def test_slow_server_degrades_the_session_until_it_answers_in_time(tmp_path):
    handle: list[OpcUaSimulator] = []
    sink = Collector()
    cfg = sim_cfg(slow_reply_s=2.0, slow_probability=1.0)
    async with anyio.create_task_group() as tg:
        url = await tg.start(
            lambda task_status: run_opcua_simulator(cfg, task_status=task_status, handle=handle)
        )
        raw = msgspec.to_builtins(session_cfg(url, ["Ramp"], mode="polling"))
        raw.update(request_timeout_s=0.5, connect_timeout_s=1.0)
        session = msgspec.convert(raw, OpcUaSource).build(
            BuildContext(gateway_id="gw", publish=sink.publish, state_dir=tmp_path)
        )
        await tg.start(session.run)
        await wait_until(lambda: session.connect_failures >= 2, what="timeouts")
        assert session.state is State.DEGRADED and session.connects == 0
        assert sink.last("Ramp") is None
        handle[0].faults = OpcUaFaults()  # the server recovers
        await wait_until(lambda: session.state is State.RUNNING, within=15, what="recovered")
        await wait_until(lambda: sink.last("Ramp") is not None, what="values")
        tg.cancel_scope.cancel()


@pytest.mark.slow  # each asyncua server restart costs ~2 s
async def test_scheduled_restarts_are_ridden_out(tmp_path):
    sink = Collector()
    cfg = sim_cfg(restart_every_s=1.0, restart_down_s=0.2)
    async with anyio.create_task_group() as tg:
        url = await tg.start(run_opcua_simulator, cfg)
        session = session_cfg(url, ["Ramp"]).build(
            BuildContext(gateway_id="gw", publish=sink.publish, state_dir=tmp_path)
        )
        await tg.start(session.run)
        await wait_until(lambda: session.connects >= 3, within=20, what="two restarts survived")
        n = len(sink.of("Ramp"))
        await wait_until(lambda: len(sink.of("Ramp")) > n, what="values after restarts")
        tg.cancel_scope.cancel()
