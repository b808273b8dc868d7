"""Config of one Modbus RTU serial line (``type = "modbus_rtu"``)."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from otgate.config.base import Identifier, NonNegativeSeconds
from otgate.protocols.modbus.config import PointGroup, PollSettings

if TYPE_CHECKING:
    from otgate.actors.actor import Actor
    from otgate.actors.context import BuildContext


class Parity(enum.Enum):
    """Serial parity."""

    NONE = "N"
    EVEN = "E"
    ODD = "O"


class ModbusRtuAdapter(PollSettings, tag="modbus_rtu", tag_field="type", kw_only=True):
    """One RS-485/RS-232 line with one or more Modbus RTU units (slaves).

    The units share the line, so their reads run one after another. Each
    group's ``timeout`` (default: the adapter's) is that unit's own budget
    per request; a unit that does not answer is put on probation (skipped,
    re-probed with backoff) so it cannot stall its siblings.
    """

    id: Identifier
    """Adapter id: names the session in status and becomes ``adapter_id`` of its readings."""
    port: str
    """Serial device path, e.g. ``/dev/ttyUSB0`` or ``/dev/serial/by-id/...``."""
    baudrate: Annotated[int, msgspec.Meta(gt=0)] = 19200
    """Line speed in bits per second."""
    bytesize: Literal[7, 8] = 8
    """Data bits per character."""
    parity: Parity = Parity.NONE
    """Parity: ``N``, ``E`` or ``O``."""
    stopbits: Literal[1, 2] = 1
    """Stop bits."""
    request_gap: NonNegativeSeconds = 0.0
    """Silence kept on the line before each request (some RS-485 devices and
    converters need a few ms to turn the line around); 0 = none."""
    groups: list[PointGroup] = []
    """Point groups, one per unit id on the line."""

    def __post_init__(self) -> None:
        if not self.port:
            raise ValueError("port must not be empty")
        if not any(g.points for g in self.groups):
            raise ValueError(f"adapter {self.id}: no points configured")
        self._check_poll()

    def build(self, ctx: BuildContext) -> Actor:
        """The device-session actor for this serial line."""
        from otgate.protocols.modbus_rtu.session import ModbusRtuSession

        return ModbusRtuSession(self, ctx)
