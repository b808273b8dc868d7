"""Writes to a Modbus device: the function per point, the frames, the read-back.

Holding registers: single register (6) or multiple registers (16), chunked
by ``max_registers_per_write`` (a wider value goes out in several requests,
lowest address first: not atomic); a ``bit`` point is set with mask write
register (22), leaving the register's other bits alone. Coils: single (5) or
multiple coils (15). Values are encoded by ``convert.encode_value`` (byte and
word order, scale/offset inverted), after ``convert.check_writable``.

The write runs under the session's bus lock (fair), so the poll loop and
the write never interleave on one connection (an RTU line serves one request
at a time anyway); a poll in progress hands the bus over at its next read
(``writes_waiting``), so a write waits for at most one read. After the write the value is read back and
decoded by the point's own decoder: WRITTEN when it equals what the encoded
value decodes to (so float32 rounding and scale steps compare equal),
MISMATCH otherwise. A write is never repeated: an exception code is
REJECTED with that code, a timeout or a lost connection is TIMED_OUT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from otgate.actors.records import CommandStatus, Value
from otgate.protocols.commands import Outcome, WritablePoint
from otgate.protocols.modbus.config import DataType, Order, Point, Table, WriteMode
from otgate.protocols.modbus.convert import (
    check_writable,
    encode_value,
    register_decoder,
    registers_to_bytes,
)
from otgate.protocols.modbus.errors import Failure, classify
from otgate.protocols.writes import DEFAULT_SPEC

if TYPE_CHECKING:
    from otgate.protocols.modbus.session import ModbusSession

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class _Refused(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


def writable_points(cfg: Any) -> list[WritablePoint]:
    """The writable points of a Modbus device config (``target`` = (unit, Point, timeout))."""
    out = []
    for g in cfg.groups:
        for p in g.points:
            if p.writable:
                out.append(
                    WritablePoint(
                        asset_id=p.asset_id or g.asset_id or "",
                        parameter=p.parameter,
                        spec=p.write or DEFAULT_SPEC,
                        target=(g.unit_id, p, g.timeout or cfg.timeout),
                    )
                )
    return out


def _frames(
    point: Point, value: Value, max_regs: int, decode: Any
) -> tuple[list[tuple[str, dict]], Value]:
    """The client calls that write ``value`` and the value a read-back must decode to."""
    mode = point.write.mode if point.write else WriteMode.AUTO
    if point.table is Table.COIL:
        on = bool(value)
        if mode is WriteMode.MULTIPLE:
            return [("write_coils", {"address": point.address, "values": [on]})], on
        return [("write_coil", {"address": point.address, "value": on})], on
    if point.type is DataType.BIT:
        bit = point.bit or 0
        if point.byte_order is Order.LITTLE:  # the decoder swaps the bytes first
            bit = (bit + 8) % 16
        mask = 1 << bit
        on = bool(value)
        call = {"address": point.address, "and_mask": 0xFFFF ^ mask, "or_mask": mask if on else 0}
        return [("mask_write_register", call)], on
    regs = encode_value(point, value)
    expected = decode(registers_to_bytes(regs))
    if len(regs) == 1 and mode is not WriteMode.MULTIPLE:
        return [("write_register", {"address": point.address, "value": regs[0]})], expected
    frames = [
        ("write_registers", {"address": point.address + i, "values": regs[i : i + max_regs]})
        for i in range(0, len(regs), max_regs)
    ]
    return frames, expected


class ModbusWriter:
    """Executes one session's writes (see the module doc)."""

    def __init__(self, session: ModbusSession) -> None:
        self.session = session
        self._decoders: dict[int, tuple[Point, Any]] = {}  # id(point) -> (point, its decoder)

    def _decoder(self, point: Point) -> Any:
        """The point's register decoder, built once (the read-back and the expected value)."""
        hit = self._decoders.get(id(point))
        if hit is None or hit[0] is not point:
            hit = self._decoders[id(point)] = (point, register_decoder(point, 0))
        return hit[1]

    def reachable(self, wp: WritablePoint) -> bool:
        """Connected, and the point's unit is not on probation (it stopped answering)."""
        s = self.session
        return (
            s.client is not None
            and s.client.connected
            and bool(s.counters["connected"])
            and wp.target[0] not in s.probation
        )

    async def execute(self, wp: WritablePoint, value: Value, durable: anyio.Event) -> Outcome:
        unit, point, timeout = wp.target
        why = check_writable(point, value)
        if why:
            return Outcome(CommandStatus.REJECTED, detail=why)
        session = self.session
        # the ledger entry first, the bus after: holding the bus while the fsync
        # ends would stall this session's reads (the fsync often outlasts the
        # bus wait: ~7 ms vs ~4 ms here), for less than 1 ms of latency
        if not durable.is_set():  # set already when marked taken with the fetch: no
            await durable.wait()  # event-loop turn (~4 ms on a loaded machine)
        self._mark("ledger_wait")
        session.writes_waiting += 1  # the poll in progress yields at its next read
        try:
            await session.bus.acquire()
        finally:
            session.writes_waiting -= 1
        self._mark("bus_wait")
        try:
            return await self._under_bus(wp, point, unit, timeout, value)
        finally:
            session.bus.release()

    async def _under_bus(
        self, wp: WritablePoint, point: Point, unit: int, timeout: float, value: Value
    ) -> Outcome:
        frames, expected = _frames(
            point, value, self.session.cfg.max_registers_per_write, self._decoder(point)
        )
        client = self.session.client
        if not client.connected:
            return Outcome(
                CommandStatus.REJECTED,
                detail="the connection dropped before the write went out; nothing written",
            )
        client.ctx.comm_params.timeout_connect = timeout
        try:
            for i, (name, kwargs) in enumerate(frames):
                part = f" (request {i + 1} of {len(frames)}; the earlier went out)" if i else ""
                self.session.counters["write_requests"] += 1
                await self._call(client, name, kwargs, unit, part)
            self._mark("write")
        except _Refused as refused:
            if i and refused.outcome.status is CommandStatus.REJECTED:
                # the earlier requests changed the device: not "nothing written"
                return Outcome(
                    CommandStatus.MISMATCH, code=refused.outcome.code,
                    detail=f"partly written: {refused.outcome.detail}",
                )
            return refused.outcome
        if not wp.spec.read_back:
            return Outcome(CommandStatus.WRITTEN, detail="not read back (read_back = false)")
        try:
            got = await self._read_back(client, point, unit)
            self._mark("read_back")
        except _Refused as refused:
            return Outcome(
                CommandStatus.MISMATCH,
                detail=f"acknowledged, but the read-back failed: {refused.outcome.detail}",
            )
        if got == expected and type(got) is type(expected):
            return Outcome(CommandStatus.WRITTEN, read_back=got)
        return Outcome(CommandStatus.MISMATCH, read_back=got, detail=f"expected {expected!r}")

    def _mark(self, step: str) -> None:
        if self.session.commands is not None:
            self.session.commands.mark(step)

    async def _call(self, client: Any, name: str, kwargs: dict, unit: int, part: str) -> Any:
        try:
            rr = await getattr(client, name)(**kwargs, device_id=unit)
        except Exception as exc:  # classify() re-raises what it does not know
            failure = classify(exc)
            raise _Refused(_not_confirmed(failure, exc, part)) from None
        if rr.isError():
            code = getattr(rr, "exception_code", None)
            name_ = EXCEPTION_NAMES.get(code or 0, "exception")
            raise _Refused(
                Outcome(CommandStatus.REJECTED, code=code, detail=f"exception {code}: {name_}{part}")
            )
        return rr

    async def _read_back(self, client: Any, point: Point, unit: int) -> Value | None:
        if point.table is Table.COIL:
            rr = await self._call(
                client, "read_coils", {"address": point.address, "count": 1}, unit, ""
            )
            return bool(rr.bits[0])
        rr = await self._call(
            client, "read_holding_registers", {"address": point.address, "count": point.width},
            unit, "",
        )
        return self._decoder(point)(rr.raw)


def _not_confirmed(failure: Failure, exc: BaseException, part: str) -> Outcome:
    return Outcome(
        CommandStatus.TIMED_OUT,
        detail=f"not confirmed ({failure.value}: {type(exc).__name__}){part}",
    )
