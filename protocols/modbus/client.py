"""pymodbus client hardening and fast register responses, shared by the TCP
and RTU sessions.

* ``harden()``: pymodbus 3.16 raises ``ModbusIOException("Unable to decode
  ...")`` from inside the protocol's ``data_received`` when a frame cannot be
  decoded (a garbage frame); asyncio then treats it as a fatal transport
  error and the pending read only ends by timing out. The wrapper makes a
  garbage frame fail the pending read at once with that exception
  (classified GARBAGE: its points go BAD) and drops the rest of the receive
  buffer; the connection stays up.
* Register responses (function codes 3 and 4) are decoded by
  ``RawHoldingRegisters`` / ``RawInputRegisters``, registered through
  pymodbus' public ``client.register()``: they keep the frame's register
  bytes as ``raw`` instead of unpacking every register into a Python list
  (pymodbus does that with one ``struct.unpack`` per register), because the
  session unpacks a whole read with one precompiled struct anyway.
  ``registers`` stays available, computed on access; ``str()`` (which
  pymodbus calls on every decoded PDU for a debug line, even with debug
  logging off) no longer formats the register list.
"""

from __future__ import annotations

import struct
from typing import Any

from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)


class _RawRegisters:
    """Mixin: keep the register bytes; build the list only when asked."""

    raw: bytes = b""

    def decode(self, data: bytes) -> None:
        n = data[0]
        if n >= len(data):
            raise ModbusIOException(
                f"byte_count {n} > length of packet {len(data)}",
                function_code=self.function_code,  # type: ignore[attr-defined]
            )
        self.raw = bytes(data[1 : 1 + n])

    @property
    def registers(self) -> list[int]:  # type: ignore[override]
        raw = self.raw
        return list(struct.unpack(f">{len(raw) // 2}H", raw[: len(raw) // 2 * 2]))

    @registers.setter
    def registers(self, value: list[int]) -> None:
        self.raw = struct.pack(f">{len(value)}H", *value)

    def __str__(self) -> str:
        # pymodbus formats every decoded PDU for a debug line even when debug
        # logging is off; keep that cheap (no register list)
        return (
            f"{type(self).__name__}(dev_id={self.dev_id}, "  # type: ignore[attr-defined]
            f"transaction_id={self.transaction_id}, bytes={len(self.raw)})"  # type: ignore[attr-defined]
        )


class RawHoldingRegisters(_RawRegisters, ReadHoldingRegistersResponse):
    """Read-holding-registers response that keeps its bytes (``raw``)."""


class RawInputRegisters(_RawRegisters, ReadInputRegistersResponse):
    """Read-input-registers response that keeps its bytes (``raw``)."""


def harden(client: Any) -> Any:
    """Make a garbage frame fail the pending request instead of the transport,
    and decode register responses as raw bytes."""
    client.register(RawHoldingRegisters)
    client.register(RawInputRegisters)
    ctx = client.ctx
    original = ctx.callback_data

    def callback_data(data: bytes, addr: tuple | None = None) -> int:
        try:
            return original(data, addr)
        except ModbusIOException as exc:
            fut = getattr(ctx, "response_future", None)
            if fut is not None and not fut.done():
                fut.set_exception(exc)
            return len(data)

    ctx.callback_data = callback_data
    return client
