"""Counting devices: every value they produce is its own sequence number, so
a checker can tell exactly what was produced, read, delivered or lost."""

from __future__ import annotations

import json
import logging
import time

import aiomqtt
import anyio

from otgate.protocols.modbus.config import DataType, Table
from otgate.simulations.modbus_sim import (
    Faults,
    ModbusSimulator,
    ModbusTcpSimConfig,
    SimDevice,
    SimPoint,
    run_modbus_tcp_simulator,
)
from otgate.simulations.signals import Ramp

log = logging.getLogger("otgate.harness")
COUNTER_ADDRESS = 1


def mqtt_adapter_toml(
    adapter_id: str, client_id: str, broker_port: int, suffix: str, fields: str
) -> str:
    """The gateway's MQTT adapter for harness devices that publish JSON with
    ``seq`` and ``ts`` (epoch ms) at QoS 1 to ``harness/<device>/<suffix>``: a
    persistent session, the device as the asset, ``fields`` the TOML inline
    tables of its ``fields`` array."""
    return f"""
[[adapters]]
type = "mqtt"
id = "{adapter_id}"
host = "127.0.0.1"
port = {broker_port}
client_id = "{client_id}"
clean_session = false
[[adapters.subscriptions]]
topic = "harness/+/{suffix}"
qos = 1
asset_from_topic = 1
time_path = "ts"
time_format = "epoch_ms"
fields = [{fields}]
"""


class MqttCounter:
    """Publishes ``{"seq": n, "ts": epoch_ms}`` at QoS 1 to ``harness/<id>/seq``.

    ``produced`` counts the messages the broker acknowledged (PUBACK): those
    the gateway must deliver. While the broker cannot be reached nothing is
    produced (a real device would buffer or drop; we do not count those).
    """

    def __init__(self, device_id: str, port: int, interval: float) -> None:
        self.id = device_id
        self.port = port
        self.interval = interval
        self.produced = 0

    async def run(self, until: float) -> None:
        while time.monotonic() < until:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"dev-{self.id}") as c:
                    while time.monotonic() < until:
                        body = json.dumps(
                            {"seq": self.produced + 1, "ts": time.time_ns() // 1_000_000}
                        )
                        await c.publish(f"harness/{self.id}/seq", body, qos=1)
                        self.produced += 1
                        await anyio.sleep(self.interval)
            except aiomqtt.MqttError as exc:
                log.info("harness_device_offline device=%s error=%s", self.id, exc)
                await anyio.sleep(0.5)


class ModbusCounter:
    """A Modbus TCP device whose uint32 holding register 1 counts up; ``faults``
    make it slow or flapping from the start."""

    def __init__(self, device_id: str, rate_per_s: float, faults: Faults | None = None) -> None:
        self.id = device_id
        self.rate = rate_per_s
        self.faults = faults or Faults()
        self.sim: ModbusSimulator | None = None
        self.port = 0
        self.produced = 0

    def config(self) -> ModbusTcpSimConfig:
        point = SimPoint(
            parameter="counter",
            address=COUNTER_ADDRESS,
            type=DataType.UINT32,
            signal=Ramp(start=1.0, rate_per_s=self.rate),
        )
        return ModbusTcpSimConfig(
            port=0,
            devices=[SimDevice(unit_id=1, points=[point])],
            faults=self.faults,
            update_interval=min(0.02, 0.5 / self.rate),
        )

    def value(self) -> int:
        assert self.sim is not None
        hi, lo = self.sim.store.tables[1][Table.HOLDING][COUNTER_ADDRESS : COUNTER_ADDRESS + 2]
        return hi << 16 | lo

    async def run(self, until: float, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        handle: list[ModbusSimulator] = []
        async with anyio.create_task_group() as tg:
            self.port = await tg.start(
                lambda task_status: run_modbus_tcp_simulator(
                    self.config(), task_status=task_status, handle=handle
                )
            )
            self.sim = handle[0]
            task_status.started(self.port)
            await anyio.sleep(max(0.0, until - time.monotonic()))
            self.produced = self.value()  # the register held 1..produced
            tg.cancel_scope.cancel()
