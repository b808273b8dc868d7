"""Modbus TCP session: the shared poller over one pymodbus TCP client.

A timeout on TCP is treated as a dead connection (close, DEGRADED, reconnect
with backoff): a device that stops answering on an open socket is usually
rebooting or behind a broken link, and a late answer on a reused connection
only confuses transaction matching.
"""

from __future__ import annotations

from typing import Any

from otgate.protocols.modbus.client import harden
from otgate.protocols.modbus.session import ModbusSession
from pymodbus.client import AsyncModbusTcpClient


class ModbusTcpSession(ModbusSession):
    """Polls one Modbus TCP device (see ``protocols.modbus.session``)."""

    kind = "modbus_tcp"

    def _make_client(self) -> Any:
        cfg = self.cfg
        # pymodbus' own retry/reconnect is off: this session owns both policies.
        # Its timeout is only a backstop; each read has its own budget.
        return harden(AsyncModbusTcpClient(
            cfg.host,
            port=cfg.port,
            name=cfg.id,
            timeout=max(cfg.timeout * 4, 2.0),
            retries=0,
            reconnect_delay=0,
        ))
