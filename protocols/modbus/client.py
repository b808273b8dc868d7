"""pymodbus client hardening shared by the TCP and RTU sessions.

pymodbus 3.16 raises ``ModbusIOException("Unable to decode ...")`` from
inside the protocol's ``data_received`` when a frame cannot be decoded (a
garbage frame). asyncio then treats it as a fatal transport error and the
pending read only ends by timing out. ``harden()`` wraps the client's
receive callback so a garbage frame instead fails the pending read at once
with that exception (classified GARBAGE: its points go BAD) and the rest of
the receive buffer is dropped; the connection stays up.
"""

from __future__ import annotations

from typing import Any

from pymodbus.exceptions import ModbusIOException


def harden(client: Any) -> Any:
    """Make a garbage frame fail the pending request instead of the transport."""
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
