"""Modbus TCP session: the shared poller over one pymodbus TCP client.

A timeout puts that unit on probation (a TCP gateway in front of several
serial units keeps serving the others); when every unit of the connection
is on probation the socket is considered dead (a device that stops
answering on an open socket is usually rebooting or behind a broken link)
and is closed and reopened with backoff.
"""

from __future__ import annotations

from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from otgate.protocols.modbus.client import harden
from otgate.protocols.modbus.session import ModbusSession


class ModbusTcpSession(ModbusSession):
    """Polls one Modbus TCP device (see ``protocols.modbus.session``)."""

    kind = "modbus_tcp"

    def _make_client(self) -> Any:
        cfg = self.cfg
        # pymodbus' own retry/reconnect is off: this session owns both policies.
        return harden(AsyncModbusTcpClient(
            cfg.host,
            port=cfg.port,
            name=cfg.id,
            timeout=cfg.timeout,  # set per read to the unit's budget
            retries=0,
            reconnect_delay=0,
        ))
