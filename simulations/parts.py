"""Simulators as gateway parts: ``[[simulators]]`` in a gateway config runs
simulated devices in their own bulkheads, so one config starts a whole
simulated plant (the demo, soak tests, the fault-injection harness)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from otgate.actors.actor import Actor
from otgate.actors.context import BuildContext
from otgate.config.base import Identifier, Port, StrictStruct
from otgate.simulations.modbus_sim import ModbusTcpSimConfig
from otgate.simulations.mqtt_sim import MqttBrokerConfig, MqttSimConfig
from otgate.simulations.opcua_sim_config import OpcUaSimConfig

log = logging.getLogger("otgate.simulations")


class SimulatorActor(Actor):
    """Runs one simulator until stopped; a crash is restarted like any actor."""

    kind = "simulator"

    def __init__(self, sim_id: str, serve: Callable[..., Awaitable[None]], cfg: Any) -> None:
        super().__init__(sim_id)
        self._serve = serve
        self._cfg = cfg
        self.endpoint = ""

    async def main(self) -> None:
        import anyio

        async with anyio.create_task_group() as tg:
            self.endpoint = str(await tg.start(self._serve, self._cfg))
            log.info("simulator_started id=%s endpoint=%s", self.id, self.endpoint)


class ModbusTcpSimulator(StrictStruct, tag="modbus_tcp", tag_field="type"):
    """A simulated Modbus TCP device (pymodbus server fed by signal models)."""

    id: Identifier
    """Part id (its bulkhead's id unless grouped)."""
    server: ModbusTcpSimConfig
    """Address, unit ids, points and faults."""

    def build(self, ctx: BuildContext) -> Actor:
        from otgate.simulations.modbus_sim import run_modbus_tcp_simulator

        return SimulatorActor(self.id, run_modbus_tcp_simulator, self.server)


class OpcUaSimulator(StrictStruct, tag="opcua", tag_field="type"):
    """A simulated OPC UA server (asyncua)."""

    id: Identifier
    """Part id."""
    server: OpcUaSimConfig
    """Endpoint, variables and faults."""

    def build(self, ctx: BuildContext) -> Actor:
        from otgate.simulations.opcua_sim import run_opcua_simulator

        return SimulatorActor(self.id, run_opcua_simulator, self.server)


class MqttPublisherSimulator(StrictStruct, tag="mqtt_publisher", tag_field="type"):
    """A simulated field device publishing to an MQTT broker."""

    id: Identifier
    """Part id."""
    publisher: MqttSimConfig
    """Broker, topics, payloads and faults."""

    def build(self, ctx: BuildContext) -> Actor:
        from otgate.simulations.mqtt_sim import run_mqtt_publisher

        return SimulatorActor(self.id, run_mqtt_publisher, self.publisher)


class MqttBrokerSimulator(StrictStruct, tag="mqtt_broker", tag_field="type"):
    """A private Mosquitto broker on loopback (needs Debian's ``mosquitto``)."""

    id: Identifier
    """Part id."""
    broker: MqttBrokerConfig = MqttBrokerConfig()
    """Address and binary."""

    def build(self, ctx: BuildContext) -> Actor:
        from otgate.simulations.mqtt_sim import run_mqtt_broker

        return SimulatorActor(self.id, run_mqtt_broker, self.broker)


class PostgresDemoConfig(StrictStruct):
    """A demo PostgreSQL server (Debian's ``postgresql`` binaries, run in the foreground)."""

    port: Port = 15432
    """Port on 127.0.0.1."""
    data_dir: str = ""
    """Server directory (its ``data/``, ``server.log``, socket), absolute or relative
    to the gateway's state dir; empty = ``postgres`` in the state dir, so deleting
    the state dir starts afresh. Run as root, the server's user (``postgres``)
    must be able to enter it; where it cannot (a clone under /root) the data
    goes to a temp dir that ``postgres`` in the state dir links to."""


class PostgresDemoServer(StrictStruct, tag="postgres", tag_field="type"):
    """A PostgreSQL server for the demo's sink; it dies with its bulkhead."""

    id: Identifier
    """Part id."""
    server: PostgresDemoConfig = PostgresDemoConfig()
    """Port and data directory."""

    def build(self, ctx: BuildContext) -> Actor:
        return SimulatorActor(self.id, serve_demo_postgres, (self.server, ctx.state_dir))


async def serve_demo_postgres(
    cfg_and_state: tuple[PostgresDemoConfig, Path], *, task_status=None
) -> None:
    import anyio

    from otgate.simulations.postgres_server import PostgresServer, reachable_workdir

    cfg, state_dir = cfg_and_state
    data = await anyio.to_thread.run_sync(
        reachable_workdir, state_dir / (cfg.data_dir or "postgres")
    )
    server = PostgresServer(data, cfg.port)
    try:
        await anyio.to_thread.run_sync(server.init)
        await anyio.to_thread.run_sync(server.start)
        if task_status is not None:
            task_status.started(server.dsn())
        while server.running():
            await anyio.sleep(0.5)
        raise RuntimeError(f"postgres exited; see {data / 'server.log'}")
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.stop)


SimulatorConfig = (
    ModbusTcpSimulator
    | OpcUaSimulator
    | MqttPublisherSimulator
    | MqttBrokerSimulator
    | PostgresDemoServer
)
