"""The demo-plant Modbus snippet (simulator part + adapter from one gateway
config) decodes through the gateway schema and flows end to end in-process."""

from __future__ import annotations

import tomllib
from pathlib import Path

import anyio
import pytest
from peers.modbus import Collector

from otgate.actors.context import BuildContext
from otgate.actors.records import Classification, Quality
from otgate.config.load import decode

pytestmark = pytest.mark.anyio

DEMO_TOML = '''
[[simulators]]
type = "modbus_tcp"
id = "sim-press"

  [simulators.server]
  host = "127.0.0.1"
  port = PORT
  update_interval = 0.5

  [simulators.server.faults]
  slow_reply_s = 1.5             # slower than the adapter's 0.5 s budget
  slow_probability = 0.002
  exception_code = 4
  exception_probability = 0.002
  garbage_probability = 0.001
  disconnect_every_s = 600.0

  [[simulators.server.devices]]
  unit_id = 1

    [[simulators.server.devices.points]]
    parameter = "oil_temperature"
    address = 0
    type = "float32"
    word_order = "little"
    signal = { kind = "sine", amplitude = 4.0, offset = 62.0, period_s = 120.0, noise = 0.2 }

    [[simulators.server.devices.points]]
    parameter = "pressure"
    address = 2
    type = "int16"
    scale = 0.1
    signal = { kind = "random_walk", start = 180.0, step = 0.5, min = 150.0, max = 210.0 }

    [[simulators.server.devices.points]]
    parameter = "run_state"
    address = 3
    signal = { kind = "states", states = [0, 1, 2], mean_dwell_s = 20.0 }

    [[simulators.server.devices.points]]
    parameter = "overtemp_trip"
    address = 4
    type = "bit"
    bit = 0
    signal = { kind = "toggle", on_s = 10.0, off_s = 110.0 }

    [[simulators.server.devices.points]]
    parameter = "motor_running"
    table = "coil"
    address = 0
    type = "bool"
    signal = { kind = "toggle", on_s = 50.0, off_s = 10.0 }

[[adapters]]
type = "modbus_tcp"
id = "press-plc"
host = "127.0.0.1"
port = PORT
poll_interval = 0.2
timeout = 0.5

  [[adapters.groups]]
  unit_id = 1
  asset_id = "press-1"

    [[adapters.groups.points]]
    parameter = "oil_temperature"
    address = 0
    type = "float32"
    word_order = "little"
    unit = "degC"

    [[adapters.groups.points]]
    parameter = "pressure"
    address = 2
    type = "int16"
    scale = 0.1
    unit = "bar"

    [[adapters.groups.points]]
    parameter = "run_state"
    address = 3
    classification = "EVENT"

    [[adapters.groups.points]]
    parameter = "overtemp_trip"
    address = 4
    type = "bit"
    bit = 0
    classification = "ALARM"

    [[adapters.groups.points]]
    parameter = "motor_running"
    table = "coil"
    address = 0
    type = "bool"
    classification = "EVENT"
'''


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_demo_snippet_runs_simulator_and_adapter(tmp_path: Path) -> None:
    cfg = decode(tomllib.loads(DEMO_TOML.replace("PORT", str(_free_port()))))
    sink = Collector()
    ctx = BuildContext(gateway_id="demo", publish=sink, state_dir=tmp_path)
    sim = cfg.simulators[0].build(ctx)
    session = cfg.adapters[0].build(ctx)
    async with anyio.create_task_group() as tg:
        await tg.start(sim.run)
        with anyio.fail_after(10):
            while not sim.endpoint:
                await anyio.sleep(0.01)
        await tg.start(session.run)
        await sink.wait_for(
            lambda: {r.parameter for r in sink.readings if r.quality is Quality.GOOD}
            >= {"oil_temperature", "pressure", "run_state", "overtemp_trip", "motor_running"},
            deadline=10,
            what="every demo point GOOD",
        )
        tg.cancel_scope.cancel()
    by_param = {r.parameter: r for r in sink.readings}
    assert by_param["overtemp_trip"].classification is Classification.ALARM
    assert by_param["run_state"].classification is Classification.EVENT
    assert 50.0 < by_param["oil_temperature"].value < 75.0
    assert 150.0 <= by_param["pressure"].value <= 210.0
