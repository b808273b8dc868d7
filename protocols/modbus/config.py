"""Modbus point mapping shared by the TCP and RTU adapters.

A device (one TCP connection or one serial line) has point groups; a group is
one unit id with its points. A point names where its value lives (table,
address, type, byte/word order) and what it means (asset, parameter, unit,
classification). Addresses are the 0-based protocol addresses on the wire
(holding register 40001 in "Modicon" numbering is ``address = 0``).
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from otgate.actors.records import Classification
from otgate.config.base import Identifier, PositiveSeconds, StrictStruct, UnitId
from otgate.protocols.writes import WriteSpec

Address = Annotated[int, msgspec.Meta(ge=0, le=65535, description="0-based wire address")]


class Table(enum.Enum):
    """The four Modbus data tables."""

    HOLDING = "holding"  # function 3, 16-bit registers
    INPUT = "input"  # function 4, 16-bit registers
    COIL = "coil"  # function 1, bits
    DISCRETE = "discrete"  # function 2, bits

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)


class DataType(enum.Enum):
    """How the raw registers or bits of a point become a value."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BOOL = "bool"  # a coil / discrete input, or "register != 0"
    BIT = "bit"  # one bit of a 16-bit register (``bit`` = 0..15, 0 = LSB)
    STRING = "string"  # ``length`` registers, 2 characters each


class Order(enum.Enum):
    """Byte order inside a register, or word (register) order inside a value."""

    BIG = "big"  # most significant first: the Modbus standard
    LITTLE = "little"  # least significant first


class WriteMode(enum.Enum):
    """Which Modbus function a write uses."""

    AUTO = "auto"
    """Single register (6) / single coil (5) for one register or coil, multiple
    registers (16) for wider values; a ``bit`` point uses mask write (22)."""
    SINGLE = "single"
    """Always write single register (6) / single coil (5): one-register values only."""
    MULTIPLE = "multiple"
    """Always write multiple registers (16) / multiple coils (15), even for one
    (devices that implement only these)."""


class ModbusWriteSpec(WriteSpec, kw_only=True):
    """Limits, permission and function of a writable Modbus point."""

    mode: WriteMode = WriteMode.AUTO
    """auto | single | multiple (see ``WriteMode``)."""


REGISTER_WIDTH = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
    DataType.BOOL: 1,
    DataType.BIT: 1,
}


class Point(StrictStruct, kw_only=True):
    """One value read from a device."""

    parameter: Identifier
    """Parameter name of the reading (e.g. ``temperature``)."""
    address: Address
    """First 0-based wire address of the value."""
    table: Table = Table.HOLDING
    """Data table: ``holding``, ``input``, ``coil`` or ``discrete``."""
    type: DataType = DataType.UINT16
    """Data type. Coils and discrete inputs only hold ``bool``."""
    asset_id: Identifier | None = None
    """Asset of the reading; defaults to the group's ``asset_id``."""
    byte_order: Order = Order.BIG
    """Byte order inside each register (``little`` swaps the two bytes)."""
    word_order: Order = Order.BIG
    """Register order of 32/64-bit values (``little`` = low word first, "CDAB")."""
    bit: Annotated[int, msgspec.Meta(ge=0, le=15)] | None = None
    """For ``type = "bit"``: bit index in the register, 0 = least significant."""
    length: Annotated[int, msgspec.Meta(ge=1, le=125)] | None = None
    """For ``type = "string"``: number of registers (2 characters each)."""
    scale: float = 1.0
    """Value = raw * scale + offset (numeric types only)."""
    offset: float = 0.0
    """Added after scaling (numeric types only)."""
    unit: str = ""
    """Engineering unit, e.g. ``degC``."""
    classification: Classification = Classification.TELEMETRY
    """TELEMETRY: every poll. EVENT: only when the value changes (a state).
    ALARM: a device alarm bit, emitted when it changes."""
    writable: bool = False
    """Accept writes (holding registers and coils only): ``POST
    /points/{asset}/{parameter}/write``, ``otgate write``."""
    write: ModbusWriteSpec | None = None
    """Limits, role and function of writes (needs ``writable = true``)."""

    def __post_init__(self) -> None:
        t = self.type
        if self.table.is_bits and t is not DataType.BOOL:
            raise ValueError(f"{self.parameter}: table {self.table.value} holds bool only")
        if (t is DataType.BIT) != (self.bit is not None):
            raise ValueError(f"{self.parameter}: 'bit' is required for type bit (and only then)")
        if (t is DataType.STRING) != (self.length is not None):
            raise ValueError(
                f"{self.parameter}: 'length' is required for type string (and only then)"
            )
        if (self.scale != 1.0 or self.offset != 0.0) and t in (
            DataType.BOOL,
            DataType.BIT,
            DataType.STRING,
        ):
            raise ValueError(f"{self.parameter}: scale/offset apply to numeric types only")
        if self.scale == 0.0:
            raise ValueError(f"{self.parameter}: scale must not be 0")
        if self.address + self.width > 65536:
            raise ValueError(f"{self.parameter}: address + width exceeds 65535")
        self._check_write()

    def _check_write(self) -> None:
        if not self.writable:
            if self.write is not None:
                raise ValueError(f"{self.parameter}: 'write' needs writable = true")
            return
        if self.table not in (Table.HOLDING, Table.COIL):
            raise ValueError(
                f"{self.parameter}: only holding registers and coils are writable,"
                f" not {self.table.value}"
            )
        mode = self.write.mode if self.write else WriteMode.AUTO
        if mode is WriteMode.SINGLE and self.width > 1:
            raise ValueError(
                f"{self.parameter}: write mode single writes one register; "
                f"this {self.type.value} spans {self.width}"
            )
        if self.type is DataType.BIT and mode is not WriteMode.AUTO:
            raise ValueError(f"{self.parameter}: a bit point is written with mask write (auto)")

    @property
    def width(self) -> int:
        """Registers (or bits) the point occupies."""
        if self.table.is_bits:
            return 1
        if self.type is DataType.STRING:
            return self.length or 1
        return REGISTER_WIDTH[self.type]


class PointGroup(StrictStruct, kw_only=True):
    """The points of one unit id (slave) behind a connection."""

    unit_id: UnitId = 1
    """Modbus unit id (slave address) of these points."""
    asset_id: Identifier | None = None
    """Default asset of the group's points."""
    points: list[Point] = []
    """The points read from this unit."""
    timeout: PositiveSeconds | None = None
    """Per-unit response timeout; defaults to the device ``timeout``. On a
    shared serial line this is the unit's own budget per request."""

    def __post_init__(self) -> None:
        seen: set[tuple[str, str]] = set()
        for p in self.points:
            asset = p.asset_id or self.asset_id
            if asset is None:
                raise ValueError(f"point {p.parameter}: no asset_id (set it on the point or group)")
            key = (asset, p.parameter)
            if key in seen:
                raise ValueError(f"duplicate point {asset}/{p.parameter} in unit {self.unit_id}")
            seen.add(key)


class PollSettings(StrictStruct, kw_only=True):
    """Per-device polling settings shared by the TCP and RTU adapters."""

    poll_interval: PositiveSeconds = 1.0
    """Seconds between poll starts; a slow poll is followed immediately by the next."""
    timeout: PositiveSeconds = 1.0
    """Seconds to wait for one response."""
    max_registers_per_read: Annotated[int, msgspec.Meta(ge=1, le=125)] = 125
    """Most registers one read may ask for (devices that reject large reads want less)."""
    max_bits_per_read: Annotated[int, msgspec.Meta(ge=1, le=2000)] = 2000
    """Most coils / discrete inputs one read may ask for."""
    max_registers_per_write: Annotated[int, msgspec.Meta(ge=1, le=123)] = 123
    """Most registers one write (function 16) may carry; a wider value (a long
    string) is written in several requests, lowest address first (not atomic)."""
    max_gap: Annotated[int, msgspec.Meta(ge=0, le=124)] = 16
    """Unused registers (or bits) a read may span to join two points; 0 = only adjacent."""
    busy_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3
    """Retries of a read answered with "server busy" (exception 6), with backoff."""
    reconnect_min: PositiveSeconds = 0.5
    """First reconnect delay; doubles per failed attempt (with jitter)."""
    reconnect_max: PositiveSeconds = 30.0
    """Longest reconnect delay."""

    def _check_poll(self) -> None:
        if self.reconnect_min > self.reconnect_max:
            raise ValueError("reconnect_min must be <= reconnect_max")
        for g in self.groups:  # type: ignore[attr-defined]
            for p in g.points:
                limit = self.max_bits_per_read if p.table.is_bits else self.max_registers_per_read
                if p.width > limit:
                    raise ValueError(
                        f"point {p.parameter}: {p.width} registers exceed "
                        f"max_registers_per_read={limit}"
                    )
        units = [g.unit_id for g in self.groups]  # type: ignore[attr-defined]
        if len(units) != len(set(units)):
            raise ValueError("each unit_id may appear in one group only")
