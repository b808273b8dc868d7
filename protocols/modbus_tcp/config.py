"""Config of one Modbus TCP device connection (``type = "modbus_tcp"``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from otgate.config.base import Identifier, Port
from otgate.protocols.modbus.config import PointGroup, PollSettings

if TYPE_CHECKING:
    from otgate.actors.actor import Actor
    from otgate.actors.context import BuildContext


class ModbusTcpAdapter(PollSettings, tag="modbus_tcp", tag_field="type", kw_only=True):
    """One TCP connection to a Modbus server (a PLC, or a gateway with several units)."""

    id: Identifier
    """Adapter id: names the session in status and becomes ``adapter_id`` of its readings."""
    host: str
    """Host name or IP address of the device."""
    port: Port = 502
    """TCP port of the device."""
    groups: list[PointGroup] = []
    """Point groups, one per unit id."""

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        if not any(g.points for g in self.groups):
            raise ValueError(f"adapter {self.id}: no points configured")
        self._check_poll()

    def build(self, ctx: BuildContext) -> Actor:
        """The device-session actor for this connection."""
        from otgate.protocols.modbus_tcp.session import ModbusTcpSession

        return ModbusTcpSession(self, ctx)
