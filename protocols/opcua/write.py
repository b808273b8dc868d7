"""Writes to an OPC UA server: the node's DataType, the Write, the read-back.

The value is converted to the node's own DataType (read once per node and
connection from its DataType attribute): booleans, the eight integer types (range
checked), Float (the value as float32), Double and String. Other types are
refused. The Write's status code decides: Good → read back, WRITTEN when the
value equals what was written (after float32 rounding), MISMATCH otherwise;
Bad (``BadNotWritable``, ``BadUserAccessDenied``, ``BadTypeMismatch``,
``BadOutOfRange`` ...) → REJECTED with the status code and its name. A lost
connection or a timeout during the Write is TIMED_OUT (not confirmed, never
repeated).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import anyio
from asyncua import ua

from otgate.actors.records import CommandStatus, Value
from otgate.protocols.commands import Outcome, WritablePoint
from otgate.protocols.opcua.client import is_retriable, status_of
from otgate.protocols.writes import DEFAULT_SPEC

if TYPE_CHECKING:
    from otgate.protocols.opcua.session import OpcUaSession

VT = ua.VariantType
_INT_RANGE = {
    VT.SByte: (-(2**7), 2**7 - 1),
    VT.Byte: (0, 2**8 - 1),
    VT.Int16: (-(2**15), 2**15 - 1),
    VT.UInt16: (0, 2**16 - 1),
    VT.Int32: (-(2**31), 2**31 - 1),
    VT.UInt32: (0, 2**32 - 1),
    VT.Int64: (-(2**63), 2**63 - 1),
    VT.UInt64: (0, 2**64 - 1),
}


def writable_points(cfg: Any) -> list[WritablePoint]:
    """The writable points of an OPC UA source (``target`` = the node id string)."""
    return [
        WritablePoint(p.asset_id, p.parameter, p.write or DEFAULT_SPEC, p.node_id)
        for p in cfg.points
        if p.writable
    ]


def to_variant(value: Value, vtype: ua.VariantType) -> Any:
    """``value`` as a Python value of ``vtype``; raises ValueError when it does not fit."""
    is_num = isinstance(value, int | float) and not isinstance(value, bool)
    if vtype is VT.Boolean:
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise ValueError(f"value {value!r}: the node is Boolean")
    if vtype in _INT_RANGE:
        if not is_num or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"value {value!r}: the node is {vtype.name} (a whole number)")
        low, high = _INT_RANGE[vtype]
        if not low <= int(value) <= high:
            raise ValueError(f"value {value!r}: out of range for {vtype.name}")
        return int(value)
    if vtype is VT.Float:
        if not is_num:
            raise ValueError(f"value {value!r}: the node is Float")
        try:
            return struct.unpack("<f", struct.pack("<f", value))[0]
        except OverflowError:
            raise ValueError(f"value {value!r}: out of range for Float") from None
    if vtype is VT.Double:
        if not is_num:
            raise ValueError(f"value {value!r}: the node is Double")
        return float(value)
    if vtype is VT.String:
        if not isinstance(value, str):
            raise ValueError(f"value {value!r}: the node is String")
        return value
    raise ValueError(f"the node's data type {vtype.name} is not writable through otgate")


class OpcUaWriter:
    """Executes one session's writes on its current connection (see the module doc)."""

    def __init__(self, session: OpcUaSession) -> None:
        self.session = session
        self.types: dict[str, ua.VariantType] = {}
        self._types_of: Any = None  # the client ``types`` were read through

    def reachable(self, wp: WritablePoint) -> bool:
        return self.session.client is not None and self.session._connected_at is not None

    async def execute(self, wp: WritablePoint, value: Value, durable: anyio.Event) -> Outcome:
        client = self.session.client
        if client is None:
            return Outcome(
                CommandStatus.REJECTED,
                detail="the connection dropped before the write went out; nothing written",
            )
        if client is not self._types_of:  # a new session: the server may have changed
            self.types, self._types_of = {}, client
        node = client.get_node(wp.target)
        try:
            vtype = self.types.get(wp.target)
            if vtype is None:
                vtype = self.types[wp.target] = await node.read_data_type_as_variant_type()
            try:
                v = to_variant(value, vtype)
            except ValueError as exc:
                return Outcome(CommandStatus.REJECTED, detail=str(exc))
            await durable.wait()  # the runner's ledger entry: on disk before the write
            self.session.write_requests += 1
            await node.write_value(ua.DataValue(ua.Variant(v, vtype)))
        except ua.UaStatusCodeError as exc:
            return _bad_status(exc)
        except Exception as exc:
            if not is_retriable(exc):
                raise
            return Outcome(
                CommandStatus.TIMED_OUT, detail=f"not confirmed ({type(exc).__name__}: {exc})"
            )
        if not wp.spec.read_back:
            return Outcome(CommandStatus.WRITTEN, detail="not read back (read_back = false)")
        try:
            got = await node.read_value()
        except Exception as exc:
            if not is_retriable(exc) and status_of(exc) is None:
                raise
            return Outcome(
                CommandStatus.MISMATCH, detail=f"written, but the read-back failed: {exc}"
            )
        if got == v and type(got) is type(v):
            return Outcome(CommandStatus.WRITTEN, read_back=got)
        shown = got if isinstance(got, bool | int | float | str) else str(got)
        return Outcome(CommandStatus.MISMATCH, read_back=shown, detail=f"expected {v!r}")


def _bad_status(exc: ua.UaStatusCodeError) -> Outcome:
    code = status_of(exc)
    name = ua.StatusCode(code).name if code is not None else type(exc).__name__
    if code is not None and is_retriable(exc):  # the session or channel went away
        return Outcome(CommandStatus.TIMED_OUT, code=code, detail=f"not confirmed ({name})")
    return Outcome(CommandStatus.REJECTED, code=code, detail=name)
