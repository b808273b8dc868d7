"""The strict base Struct and constraint aliases every config section uses.

Loading and validating config does no I/O; connecting is a separate step.
"""

from __future__ import annotations

from typing import Annotated

import msgspec


class StrictStruct(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base for config sections: unknown keys are refused, errors name the path."""


Port = Annotated[int, msgspec.Meta(ge=1, le=65535, description="TCP/UDP port, 1-65535")]
PortOrZero = Annotated[int, msgspec.Meta(ge=0, le=65535, description="port, 0 = ephemeral")]
UnitId = Annotated[int, msgspec.Meta(ge=0, le=247, description="Modbus unit id, 0-247")]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, description="seconds, > 0")]
NonNegativeSeconds = Annotated[float, msgspec.Meta(ge=0, description="seconds, >= 0")]
Identifier = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$",
        description="identifier: letters, digits, '_', '.', '-'",
    ),
]
MiB = Annotated[int, msgspec.Meta(gt=0, description="mebibytes, > 0")]
