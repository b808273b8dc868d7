"""Modbus RTU session: the shared poller over one pymodbus serial client.

On a serial line a timeout means "that unit did not answer", not "the line
is gone": the unit goes on probation and the others keep their rate (see
``protocols.modbus.session``). The port is only reopened when the serial
transport itself fails (device unplugged: DEGRADED, reopen with backoff).
"""

from __future__ import annotations

from typing import Any

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType

from otgate.protocols.modbus.client import harden
from otgate.protocols.modbus.session import ModbusSession


class ModbusRtuSession(ModbusSession):
    """Polls the units of one Modbus RTU line."""

    kind = "modbus_rtu"

    def _make_client(self) -> Any:
        cfg = self.cfg
        longest = max([cfg.timeout, *(g.timeout or 0 for g in cfg.groups)])
        return harden(
            AsyncModbusSerialClient(
                cfg.port,
                framer=FramerType.RTU,
                baudrate=cfg.baudrate,
                bytesize=cfg.bytesize,
                parity=cfg.parity.value,
                stopbits=cfg.stopbits,
                name=cfg.id,
                timeout=longest,  # set per read to the unit's budget
                retries=0,
                reconnect_delay=0,
            )
        )

    def _reset_on_timeout(self) -> bool:
        return False  # silence on the line is per unit; reopening the port does not help
