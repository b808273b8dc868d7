"""Real Modbus peers for tests: pymodbus' TCP server and its RTU serial server
on a pty pair, both with the simulator's counting, fault-injecting datastore.

Usage: ``from peers.modbus import modbus_server_fixture  # noqa: F401`` registers
the ``modbus_server`` fixture (``modbus_rtu_server_fixture`` → ``modbus_rtu_server``).
Each fixture yields a ``ModbusSimulator`` (``.port`` / ``.path``, ``.store``
with ``set_registers``/``set_bits``/``requests``, ``.faults`` to flip while
running). Units 1 and 2 exist on TCP; 1, 2 and 3 on RTU. Signals are off
(update interval 1 h), so tests control every register.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import anyio
import pytest

from otgate.simulations.modbus_sim import (
    ModbusRtuSimConfig,
    ModbusSimulator,
    ModbusTcpSimConfig,
    SimDevice,
    run_modbus_rtu_simulator,
    run_modbus_tcp_simulator,
)


async def _serve(runner, cfg) -> AsyncIterator[ModbusSimulator]:
    handle: list[ModbusSimulator] = []
    async with anyio.create_task_group() as tg:
        await tg.start(partial(runner, cfg, handle=handle))
        yield handle[0]
        tg.cancel_scope.cancel()


@pytest.fixture(name="modbus_server")
async def modbus_server_fixture() -> AsyncIterator[ModbusSimulator]:
    cfg = ModbusTcpSimConfig(
        devices=[SimDevice(unit_id=1), SimDevice(unit_id=2)], update_interval=3600.0
    )
    async for sim in _serve(run_modbus_tcp_simulator, cfg):
        yield sim


@pytest.fixture(name="modbus_rtu_server")
async def modbus_rtu_server_fixture() -> AsyncIterator[ModbusSimulator]:
    cfg = ModbusRtuSimConfig(
        devices=[SimDevice(unit_id=1), SimDevice(unit_id=2), SimDevice(unit_id=3)],
        update_interval=3600.0,
    )
    async for sim in _serve(run_modbus_rtu_simulator, cfg):
        yield sim


class Collector:
    """A ``publish`` that keeps every batch; tests wait on conditions over it."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.readings: list = []

    async def __call__(self, readings: list) -> None:
        self.batches.append(readings)
        self.readings.extend(readings)

    def latest(self, parameter: str, asset_id: str | None = None):
        for r in reversed(self.readings):
            if r.parameter == parameter and (asset_id is None or r.asset_id == asset_id):
                return r
        return None

    def since(self, mark: int) -> list:
        return self.readings[mark:]

    async def wait_for(self, predicate, deadline: float = 5.0, what: str = "condition") -> None:
        """Poll ``predicate()`` until true or fail after ``deadline`` seconds."""
        with anyio.move_on_after(deadline):
            while not predicate():
                await anyio.sleep(0.01)
            return
        raise AssertionError(f"timed out after {deadline}s waiting for {what}")
