"""Modbus device simulators: a pymodbus TCP server and an RTU slave on a pty
pair, fed by signal models, with fault injection.

The servers are pymodbus' own (``ModbusTcpServer`` / ``ModbusSerialServer``);
only the datastore is ours (``SimStore``): it holds per-unit register and bit
tables, counts every request it serves (tests assert on the count) and
applies the faults: dead unit ids (no answer at all), slow replies, exception
codes, "server busy". Garbage frames are injected on the wire (the server's
``trace_packet`` hook for TCP, the pty relay for RTU); disconnects close every
client connection; a reboot stops listening for ``reboot_down_s`` and comes
back on the same port.

``run_modbus_tcp_simulator(cfg)`` / ``run_modbus_rtu_simulator(cfg)`` run
until cancelled; ``task_status.started()`` gets the bound TCP port / the
client-side pty path. ``ModbusSimulator`` is the programmatic handle the
tests and benches use to change faults while running.
"""

from __future__ import annotations

import array
import contextlib
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
import msgspec
from anyio.abc import TaskStatus
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType

from otgate.config.base import NonNegativeSeconds, PortOrZero, PositiveSeconds, StrictStruct, UnitId
from otgate.protocols.modbus.config import DataType, Point, Table
from otgate.protocols.modbus.convert import encode_value
from otgate.simulations.pty_relay import PtyRelay
from otgate.simulations.signals import Constant, SignalConfig, make_signal

log = logging.getLogger("otgate.simulations.modbus")

REQUEST_LOG_SIZE = 100_000

Probability = Annotated[float, msgspec.Meta(ge=0, le=1, description="probability, 0-1")]
_FC_TABLE = {1: Table.COIL, 2: Table.DISCRETE, 3: Table.HOLDING, 5: Table.COIL, 6: Table.HOLDING,
             15: Table.COIL, 16: Table.HOLDING, 4: Table.INPUT, 22: Table.HOLDING}


class SimPoint(Point, kw_only=True):
    """A point the simulator serves (same mapping fields as the gateway's) plus its signal."""

    signal: SignalConfig = Constant()
    """Signal model feeding the value (``kind = "sine"`` ...)."""


class SimDevice(StrictStruct, kw_only=True):
    """One simulated unit id."""

    unit_id: UnitId = 1
    """Unit id this device answers to."""
    points: list[SimPoint] = []
    """Points updated from their signals every ``update_interval``."""


class Faults(StrictStruct, kw_only=True):
    """Fault injection; probabilities apply per request."""

    dead_units: list[UnitId] = []
    """Unit ids that never answer (as if the device were unplugged)."""
    slow_reply_s: NonNegativeSeconds = 0.0
    """Delay added to a slow reply."""
    slow_probability: Probability = 0.0
    """Share of replies delayed by ``slow_reply_s``."""
    exception_code: Annotated[int, msgspec.Meta(ge=1, le=11)] = 2
    """Exception code answered for injected exceptions (2 = illegal address)."""
    exception_probability: Probability = 0.0
    """Share of requests answered with ``exception_code``."""
    busy_probability: Probability = 0.0
    """Share of requests answered "server busy" (code 6)."""
    garbage_probability: Probability = 0.0
    """Share of replies corrupted on the wire."""
    disconnect_every_s: PositiveSeconds | None = None
    """Close every client connection this often (TCP only)."""
    reboot_every_s: PositiveSeconds | None = None
    """Reboot this often: TCP stops listening, RTU units fall silent, for ``reboot_down_s``."""
    reboot_down_s: PositiveSeconds = 2.0
    """Seconds a reboot keeps the server away."""


class ModbusTcpSimConfig(StrictStruct, kw_only=True):
    """A Modbus TCP server simulating one or more unit ids."""

    host: str = "127.0.0.1"
    """Address to bind."""
    port: PortOrZero = 0
    """Port to bind; 0 = ephemeral (the bound port is reported at start)."""
    devices: list[SimDevice] = []
    """Simulated unit ids."""
    faults: Faults = Faults()
    """Fault injection."""
    update_interval: PositiveSeconds = 0.5
    """Seconds between signal updates."""
    seed: int = 0
    """Seed of the signal and fault random generators."""


class ModbusRtuSimConfig(StrictStruct, kw_only=True):
    """A Modbus RTU slave line on a pseudo-terminal pair (several unit ids)."""

    devices: list[SimDevice] = []
    """Simulated unit ids on the line."""
    faults: Faults = Faults()
    """Fault injection (on a serial line a reboot silences every unit for
    ``reboot_down_s``; ``disconnect_every_s`` does not apply)."""
    baudrate: Annotated[int, msgspec.Meta(gt=0)] = 19200
    """Nominal baud rate (a pty does not throttle; the value is only configured)."""
    update_interval: PositiveSeconds = 0.5
    """Seconds between signal updates."""
    seed: int = 0
    """Seed of the signal and fault random generators."""
    link: str = ""
    """If set, a symlink at this path points to the client-side pty (like socat's
    ``link=``), so a gateway config can name a stable serial port; removed on stop."""


@dataclass
class RuntimeFaults:
    """Mutable fault switches (a test flips them while the server runs)."""

    dead_units: set[int] = field(default_factory=set)
    slow_reply_s: float = 0.0
    slow_probability: float = 0.0
    exception_code: int = 2
    exception_probability: float = 0.0
    busy_probability: float = 0.0
    garbage_probability: float = 0.0
    busy_next: int = 0  # answer the next N requests with "server busy"
    garbage_next: int = 0  # corrupt the next N replies
    exception_ranges: dict[tuple[int, int], tuple[int, int, int]] = field(default_factory=dict)
    # (unit, fc) -> (first address, last address, code): requests touching it fail

    @classmethod
    def from_config(cls, f: Faults) -> RuntimeFaults:
        return cls(
            dead_units=set(f.dead_units),
            slow_reply_s=f.slow_reply_s,
            slow_probability=f.slow_probability,
            exception_code=f.exception_code,
            exception_probability=f.exception_probability,
            busy_probability=f.busy_probability,
            garbage_probability=f.garbage_probability,
        )


class SimStore(ModbusServerContext):
    """The simulator's datastore, served by pymodbus' real server.

    Subclasses ``ModbusServerContext`` on its "custom context" path: the server
    then calls ``async_getValues`` / ``async_setValues`` of this object for
    every request. Every served request is appended to ``requests`` as
    ``(unit, function_code, address, count)`` (the newest ``REQUEST_LOG_SIZE``).
    """

    def __init__(self, unit_ids: list[int], faults: RuntimeFaults, seed: int = 0) -> None:
        # deliberately no super().__init__: that path builds pymodbus' own store
        self.simdevices = []
        self.old_simulator = True
        self.faults = faults
        self.rng = random.Random(seed)
        # bounded: a demo simulator runs for days; ``served`` counts them all
        self.requests: deque[tuple[int, int, int, int]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.writes: deque[tuple[int, int, int, list]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.served = 0
        self.tables: dict[int, dict[Table, Any]] = {}
        for u in unit_ids:
            self.add_unit(u)

    def add_unit(self, unit: int) -> None:
        self.tables[unit] = {
            Table.HOLDING: array.array("H", bytes(131072)),
            Table.INPUT: array.array("H", bytes(131072)),
            Table.COIL: bytearray(65536),
            Table.DISCRETE: bytearray(65536),
        }

    def device_ids(self) -> list[int]:
        return list(self.tables)

    def set_registers(self, unit: int, table: Table, address: int, values: list[int]) -> None:
        self.tables[unit][table][address : address + len(values)] = array.array("H", values)

    def set_bits(self, unit: int, table: Table, address: int, values: list[bool]) -> None:
        self.tables[unit][table][address : address + len(values)] = bytes(map(bool, values))

    def count(self, unit: int | None = None, fc: int | None = None) -> int:
        """Requests served so far, optionally for one unit / function code."""
        return sum(
            1
            for r in self.requests
            if (unit is None or r[0] == unit) and (fc is None or r[1] == fc)
        )

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        f = self.faults
        if device_id in f.dead_units or device_id not in self.tables:
            raise NoSuchIdException(f"unit {device_id}")  # server stays silent
        self.requests.append((device_id, func_code, address, count))
        self.served += 1
        rng = self.rng
        if f.slow_probability and rng.random() < f.slow_probability:
            await anyio.sleep(f.slow_reply_s)
        if f.busy_next > 0:
            f.busy_next -= 1
            return ExcCodes.DEVICE_BUSY
        if f.busy_probability and rng.random() < f.busy_probability:
            return ExcCodes.DEVICE_BUSY
        rng_hit = f.exception_ranges.get((device_id, func_code))
        if rng_hit and address <= rng_hit[1] and address + count - 1 >= rng_hit[0]:
            return ExcCodes(rng_hit[2])
        if f.exception_probability and rng.random() < f.exception_probability:
            return ExcCodes(f.exception_code)
        table = self.tables[device_id][_FC_TABLE[func_code]]
        if address + count > len(table):
            return ExcCodes.ILLEGAL_ADDRESS
        if isinstance(table, bytearray):
            return [b != 0 for b in table[address : address + count]]
        return table[address : address + count].tolist()

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Any
    ) -> ExcCodes | None:
        f = self.faults
        if device_id in f.dead_units or device_id not in self.tables:
            raise NoSuchIdException(f"unit {device_id}")
        rng_hit = f.exception_ranges.get((device_id, func_code))
        if rng_hit and address <= rng_hit[1] and address + len(values) - 1 >= rng_hit[0]:
            return ExcCodes(rng_hit[2])
        table = self.tables[device_id][_FC_TABLE[func_code]]
        if address + len(values) > len(table):
            return ExcCodes.ILLEGAL_ADDRESS
        self.writes.append((device_id, func_code, address, list(values)))
        if isinstance(table, bytearray):
            table[address : address + len(values)] = bytes(map(bool, values))
        else:
            table[address : address + len(values)] = array.array("H", values)
        return None

    def take_garbage(self) -> bool:
        """True when the next reply should be corrupted (consumes one ``garbage_next``)."""
        f = self.faults
        if f.garbage_next > 0:
            f.garbage_next -= 1
            return True
        return bool(f.garbage_probability) and self.rng.random() < f.garbage_probability


class SignalFeeder:
    """Writes each device's signal samples into the store every ``interval`` seconds."""

    def __init__(self, store: SimStore, devices: list[SimDevice], seed: int) -> None:
        self.store = store
        self.items = [
            (d.unit_id, p, make_signal(p.signal, seed=f"{seed}/{d.unit_id}/{p.parameter}"))
            for d in devices
            for p in d.points
        ]
        self.t0 = time.monotonic()
        self.updated = False

    def update(self) -> None:
        """Write every point's sample; a writable point only once (its initial
        value): afterwards it holds what a client wrote, like a setpoint."""
        t = time.monotonic() - self.t0
        first = not self.updated
        self.updated = True
        for unit, p, sample in self.items:
            if p.writable and not first:
                continue
            v = sample(t)
            if p.table.is_bits:
                self.store.set_bits(unit, p.table, p.address, [bool(v)])
            elif p.type is DataType.BIT:
                table = self.store.tables[unit][p.table]
                mask = 1 << (p.bit or 0)
                table[p.address] = (table[p.address] | mask) if v else (table[p.address] & ~mask)
            elif p.type is DataType.BOOL:
                self.store.set_registers(unit, p.table, p.address, [1 if v else 0])
            else:
                with contextlib.suppress(OverflowError, ValueError, Exception):
                    self.store.set_registers(unit, p.table, p.address, encode_value(p, v))

    async def run(self, interval: float) -> None:
        while True:
            self.update()
            await anyio.sleep(interval)


def _corrupt_tcp(data: bytes) -> bytes:
    # keep the MBAP header so the client reads a whole frame, break the PDU:
    # an unknown function code with a wrong byte count
    return data[:7] + bytes([0x5A]) + bytes(len(data) - 8)


class ModbusSimulator:
    """A running simulator: its store (data, request log, faults) and server(s)."""

    def __init__(self, store: SimStore) -> None:
        self.store = store
        self.faults = store.faults
        self.server: Any = None
        self.port: int = 0
        self.host: str = "127.0.0.1"
        self.path: str = ""  # RTU: client-side pty path
        self.relay: PtyRelay | None = None

    # -- TCP ------------------------------------------------------------------
    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and self.store.take_garbage():
            return _corrupt_tcp(data)
        return data

    async def start_tcp(self, host: str, port: int) -> int:
        from pymodbus.server import ModbusTcpServer  # ~0.1 s; config loading never needs it

        self.host = host
        self.server = ModbusTcpServer(
            self.store,
            address=(host, port),
            ignore_missing_devices=True,
            trace_packet=self._trace_packet,
        )
        await self.server.serve_forever(background=True)
        self.port = self.server.transport.sockets[0].getsockname()[1]
        return self.port

    def drop_connections(self) -> int:
        """Close every client connection now (the server keeps listening)."""
        conns = list(getattr(self.server, "active_connections", {}).values())
        for c in conns:
            c.close()
        return len(conns)

    async def stop(self) -> None:
        if self.server is not None:
            self.drop_connections()
            await self.server.shutdown()
            self.server = None
        if self.relay is not None:
            self.relay.close()
            self.relay = None

    async def reboot(self, down_s: float) -> None:
        """TCP: stop serving for ``down_s`` seconds, then listen again on the same
        port. RTU: every unit on the line stays silent for ``down_s`` seconds."""
        if self.relay is not None:
            silent = set(self.store.tables) - self.faults.dead_units
            self.faults.dead_units |= silent
            await anyio.sleep(down_s)
            self.faults.dead_units -= silent
            return
        await self.stop()
        await anyio.sleep(down_s)
        await self.start_tcp(self.host, self.port)

    # -- RTU ------------------------------------------------------------------
    async def start_rtu(self, baudrate: int, link: str = "") -> str:
        self.relay = PtyRelay(corrupt=self.store.take_garbage, link=link)
        await self.relay.start()
        from pymodbus.server import ModbusSerialServer

        self.server = ModbusSerialServer(
            self.store,
            framer=FramerType.RTU,
            port=self.relay.server_path,
            baudrate=baudrate,
            ignore_missing_devices=True,
        )
        await self.server.serve_forever(background=True)
        self.path = self.relay.client_path
        return self.path


def _store(devices: list[SimDevice], faults: Faults, seed: int) -> SimStore:
    return SimStore([d.unit_id for d in devices], RuntimeFaults.from_config(faults), seed)


async def _fault_schedule(sim: ModbusSimulator, faults: Faults) -> None:
    async with anyio.create_task_group() as tg:
        if faults.disconnect_every_s:
            async def disconnects(every: float) -> None:
                while True:
                    await anyio.sleep(every)
                    n = sim.drop_connections()
                    log.info("sim_fault kind=disconnect connections=%d", n)

            tg.start_soon(disconnects, faults.disconnect_every_s)
        if faults.reboot_every_s:
            async def reboots(every: float, down: float) -> None:
                while True:
                    await anyio.sleep(every)
                    log.info("sim_fault kind=reboot down_s=%.1f", down)
                    await sim.reboot(down)

            tg.start_soon(reboots, faults.reboot_every_s, faults.reboot_down_s)


def _no_disconnects(faults: Faults) -> Faults:
    return msgspec.structs.replace(faults, disconnect_every_s=None)


async def run_modbus_tcp_simulator(
    cfg: ModbusTcpSimConfig,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    handle: list[ModbusSimulator] | None = None,
) -> None:
    """Serve ``cfg`` over Modbus TCP until cancelled; ``started()`` gets the bound port.

    ``handle``, when given, receives the ``ModbusSimulator`` (for tests/benches).
    """
    sim = ModbusSimulator(_store(cfg.devices, cfg.faults, cfg.seed))
    feeder = SignalFeeder(sim.store, cfg.devices, cfg.seed)
    feeder.update()
    try:
        port = await sim.start_tcp(cfg.host, cfg.port)
        if handle is not None:
            handle.append(sim)
        log.info("sim_started kind=modbus_tcp host=%s port=%d units=%d", cfg.host, port,
                 len(cfg.devices))
        async with anyio.create_task_group() as tg:
            tg.start_soon(feeder.run, cfg.update_interval)
            tg.start_soon(_fault_schedule, sim, cfg.faults)
            task_status.started(port)
    finally:
        with anyio.CancelScope(shield=True):
            await sim.stop()


async def run_modbus_rtu_simulator(
    cfg: ModbusRtuSimConfig,
    *,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
    handle: list[ModbusSimulator] | None = None,
) -> None:
    """Serve ``cfg`` as an RTU slave line on a pty pair until cancelled.

    ``started()`` gets the client-side serial device path (open it with
    pyserial / the gateway's ``modbus_rtu`` adapter).
    """
    sim = ModbusSimulator(_store(cfg.devices, cfg.faults, cfg.seed))
    feeder = SignalFeeder(sim.store, cfg.devices, cfg.seed)
    feeder.update()
    try:
        path = await sim.start_rtu(cfg.baudrate, cfg.link)
        if handle is not None:
            handle.append(sim)
        log.info("sim_started kind=modbus_rtu path=%s units=%d", path, len(cfg.devices))
        async with anyio.create_task_group() as tg:
            tg.start_soon(feeder.run, cfg.update_interval)
            tg.start_soon(_fault_schedule, sim, _no_disconnects(cfg.faults))
            task_status.started(path)
    finally:
        with anyio.CancelScope(shield=True):
            await sim.stop()
