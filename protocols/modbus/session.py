"""The Modbus device-session actor shared by the TCP and RTU adapters.

One session owns one pymodbus client (one TCP connection or one serial line)
and polls its planned reads every ``poll_interval``. Each poll hands one list
of Readings to ``ctx.publish``; ``seq`` increases per adapter.

Failure handling (the whitelist lives in ``errors.py``):

* exception code → BAD for that read's points only; "server busy" (6) and
  "acknowledge" (5) are retried ``busy_retries`` times with backoff first;
  10/11 (a TCP gateway's target unit is unreachable) put that unit on
  probation like a timeout;
* garbage (an answer that does not fit) or a NaN → BAD for those points;
* disconnect → the session goes DEGRADED, publishes BAD once for every point,
  closes the client and reconnects with exponential backoff plus jitter, for
  ever (never needs a restart); back to RUNNING after the first poll on the
  new connection;
* timeout → that unit goes on probation: its points go BAD, it is skipped
  and re-probed after a backoff (its own timeout budget, so a dead unit on a
  shared line or behind a TCP gateway does not stall the others), and the
  session is DEGRADED until it answers again. When every unit of the
  connection is on probation (``_reset_on_timeout``) the connection itself is
  considered dead and is reopened with backoff.

Cancellation: a stop cancels the poll wherever it is; a poll's readings are
either published as one batch or not at all (nothing half-published).

Writes: with writable points (and a log), a ``CommandRunner`` runs beside the
poll loop and executes write requests (``write.py``) under ``bus``, the lock
each poll holds while it reads (not while its readings go to the log); a poll
hands it over at its next read when a write waits.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import anyio
from msgspec.structs import replace as _replace

from otgate import __version__
from otgate.actors.actor import Actor
from otgate.actors.context import BuildContext
from otgate.actors.messages import State
from otgate.actors.records import Quality, Reading, now_ns
from otgate.protocols.commands import CommandRunner
from otgate.protocols.modbus.config import Table
from otgate.protocols.modbus.errors import (
    Failure,
    classify,
    exception_failure,
    is_retriable,
)
from otgate.protocols.modbus.planning import ReadRequest, plan_reads
from otgate.protocols.modbus.write import ModbusWriter, writable_points

log = logging.getLogger("otgate.protocols.modbus")

GOOD, BAD = Quality.GOOD, Quality.BAD


class Backoff:
    """Exponential backoff with full jitter in [d/2, d], bounded by ``high``."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high, self.attempt = low, high, 0

    def next(self) -> float:
        d = min(self.high, self.low * (2**self.attempt))
        self.attempt += 1
        return d / 2 + random.random() * d / 2

    def reset(self) -> None:
        self.attempt = 0


class ModbusSession(Actor):
    """Polls one Modbus connection; see the module doc for the failure policy."""

    kind = "modbus"

    def __init__(self, cfg: Any, ctx: BuildContext) -> None:
        super().__init__(cfg.id)
        self.cfg = cfg
        self.publish = ctx.publish
        self.requests: list[ReadRequest] = plan_reads(cfg.groups, cfg)
        self.client: Any = None
        self.seq = 0
        self.version = __version__
        self.request_gap: float = getattr(cfg, "request_gap", 0.0)
        self.units = {r.unit_id for r in self.requests}
        for req in self.requests:
            for pp in req.points:
                p = pp.point
                pp.template = Reading(
                    asset_id=pp.asset_id,
                    parameter=p.parameter,
                    value=None,
                    unit=p.unit,
                    classification=p.classification,
                    gateway_time=0,
                    adapter_id=self.id,
                    adapter_version=self.version,
                )
        # unit -> (consecutive timeouts, monotonic time of the next probe)
        self.probation: dict[int, tuple[int, float]] = {}
        self.counters: dict[str, float] = {
            "polls": 0,
            "reads": 0,
            "readings_published": 0,
            "bad_readings": 0,
            "exceptions": 0,
            "busy_retries": 0,
            "timeouts": 0,
            "garbage": 0,
            "disconnects": 0,
            "reconnects": 0,
            "connected": 0,
            "units_on_probation": 0,
            "last_poll_s": 0.0,
            "poll_bus_s": 0.0,  # summed: each poll's reads (holding the bus) ...
            "poll_publish_s": 0.0,  # ... and its readings' durable append
            "write_requests": 0,
        }
        self.bus: Any = None  # anyio.Lock: one poll or one write at a time
        self.writes_waiting = 0  # writes queued for the bus: a poll yields at its next read
        writable = writable_points(cfg)
        self.commands: CommandRunner | None = None
        if writable and ctx.log is not None:
            writer = ModbusWriter(self)
            self.commands = CommandRunner(self.id, writable, ctx, writer.execute, writer.reachable)

    # -- subclass hooks -------------------------------------------------------
    def _make_client(self) -> Any:
        raise NotImplementedError

    def _reset_on_timeout(self) -> bool:
        """Whether a timeout (after putting the unit on probation) resets the connection.

        Default: only when every unit is on probation (nothing answers any more).
        """
        return len(self.probation) >= len(self.units)

    # -- unit probation ---------------------------------------------------------
    def _unit_failed(self, unit: int, now: float) -> None:
        fails, _ = self.probation.get(unit, (0, 0.0))
        fails += 1
        delay = min(self.cfg.reconnect_max, self.cfg.reconnect_min * 2 ** (fails - 1))
        if fails == 1:
            log.warning(
                "modbus_unit_unresponsive adapter_id=%s unit=%d probe_after_s=%.2f",
                self.id, unit, delay,
            )
        self.probation[unit] = (fails, now + delay)
        self.counters["units_on_probation"] = len(self.probation)

    def _unit_ok(self, unit: int) -> None:
        if self.probation.pop(unit, None) is not None:
            log.info("modbus_unit_recovered adapter_id=%s unit=%d", self.id, unit)
            self.counters["units_on_probation"] = len(self.probation)

    # -- actor ----------------------------------------------------------------
    async def setup(self) -> None:
        self.client = self._make_client()  # no I/O: connecting happens in main()
        self.bus = anyio.Lock(fast_acquire=True)

    async def teardown(self) -> None:
        if self.client is not None:
            self.client.close()

    def metrics(self) -> dict[str, float]:
        if self.commands is not None:
            return {**self.counters, **self.commands.metrics()}
        return dict(self.counters)

    async def main(self) -> None:
        if self.commands is None:
            await self._poll_forever()
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.commands.run)
            await self._poll_forever()

    async def _poll_forever(self) -> None:
        backoff = Backoff(self.cfg.reconnect_min, self.cfg.reconnect_max)
        interval = self.cfg.poll_interval
        down_since: float | None = None
        while True:
            if not self.client.connected:
                if down_since is None and self.counters["connected"]:
                    down_since = time.monotonic()  # the peer closed it between polls
                    await self._mark_down("connection_lost")
                ok = await self._connect()
                if not ok:
                    if down_since is None:
                        down_since = time.monotonic()
                        await self._mark_down("connect_failed")
                    await anyio.sleep(backoff.next())
                    continue
                if down_since is not None:
                    log.info(
                        "adapter_reconnected adapter_id=%s attempt=%d after_s=%.2f",
                        self.id,
                        backoff.attempt,
                        time.monotonic() - down_since,
                    )
                    self.counters["reconnects"] += 1
                down_since = None
                self.probation.clear()  # a new connection gets a fresh chance per unit
                self.counters["connected"] = 1
            started = time.monotonic()
            out: list[Reading] = []
            async with self.bus:
                connection_ok = await self._read_all(out)
            read = time.monotonic()
            if out:  # published off the bus: a waiting write does not wait for the log
                await self._publish(out)
            done = time.monotonic()
            self.counters["last_poll_s"] = done - started
            self.counters["poll_bus_s"] += read - started
            self.counters["poll_publish_s"] += done - read
            if not connection_ok:
                self.client.close()
                down_since = time.monotonic()
                await self._mark_down("connection_lost")
                await anyio.sleep(backoff.next())
                continue
            backoff.reset()  # only a poll that kept its connection proves the peer is back
            self.state = State.DEGRADED if self.probation else State.RUNNING
            delay = interval - (time.monotonic() - started)
            if delay > 0:
                await anyio.sleep(delay)
            # else: poll again at once; the reads themselves are checkpoints

    async def _connect(self) -> bool:
        # reads shrink pymodbus' timeout to each unit's budget; connecting gets its own
        budget = max(self.cfg.timeout, 2.0)
        self.client.ctx.comm_params.timeout_connect = budget
        try:
            with anyio.fail_after(budget + 1.0):
                ok = bool(await self.client.connect())
                if ok and not self.counters["reconnects"] and not self.counters["disconnects"]:
                    log.info("adapter_connected adapter_id=%s", self.id)
                return ok
        except (TimeoutError, OSError) as exc:
            self.last_error = f"connect: {type(exc).__name__}: {exc}"
            self.client.close()
            return False

    async def _mark_down(self, why: str) -> None:
        if self.state is not State.DEGRADED:
            log.warning("adapter_disconnected adapter_id=%s reason=%s", self.id, why)
        self.state = State.DEGRADED
        self.counters["connected"] = 0
        self.counters["disconnects"] += 1
        self.probation.clear()
        self.counters["units_on_probation"] = 0
        now = now_ns()
        out: list[Reading] = []
        for req in self.requests:
            self._bad(req, now, out)
        if out:
            await self._publish(out)

    # -- polling --------------------------------------------------------------
    async def poll_once(self) -> bool:
        """Execute every planned read once and publish the readings.

        Returns False when the connection is gone (the caller reconnects).
        """
        out: list[Reading] = []
        healthy = await self._read_all(out)
        if out:
            await self._publish(out)
        return healthy

    async def _read_all(self, out: list[Reading]) -> bool:
        """Every planned read once, their readings added to ``out`` (the caller
        publishes them); False when the connection is gone."""
        healthy = True
        mono = time.monotonic()
        probation = self.probation
        for req in self.requests:
            if self.writes_waiting:
                await self._yield_bus()
            if probation:
                entry = probation.get(req.unit_id)
                if entry is not None and mono < entry[1]:
                    continue  # unit on probation; its points went BAD when it failed
            payload = await self._read(req)
            now = now_ns()
            if payload.__class__ is Failure:
                self._bad(req, now, out)
                if payload is Failure.DISCONNECTED:
                    healthy = False
                    break
                if payload is Failure.TIMEOUT or payload is Failure.UNIT_UNAVAILABLE:
                    self._unit_failed(req.unit_id, time.monotonic())
                    for other in self.requests:  # the unit's other reads are skipped now
                        if other.unit_id == req.unit_id and other is not req:
                            self._bad(other, now, out)
                    if payload is Failure.TIMEOUT and self._reset_on_timeout():
                        healthy = False
                        break
                continue
            self._good(req, payload, now, out)
        self.counters["polls"] += 1
        return healthy

    async def _yield_bus(self) -> None:
        """Hand the bus to the waiting writes (the lock is fair) and take it back.

        Shielded: the writes ahead are bounded by their timeouts, and the
        poll's caller must hold the bus again when it releases it."""
        self.bus.release()
        with anyio.CancelScope(shield=True):
            await self.bus.acquire()

    async def _read(self, req: ReadRequest) -> Any:
        """One read with the busy-retry policy: the payload or a ``Failure``."""
        client = self.client
        fc = req.function_code
        call = (
            client.read_holding_registers
            if fc == 3
            else client.read_input_registers
            if fc == 4
            else client.read_coils
            if fc == 1
            else client.read_discrete_inputs
        )
        # the budget is pymodbus' own response timeout (one asyncio.wait_for per
        # request, which the client pays anyway); per unit, so set it per read
        params = client.ctx.comm_params
        if params.timeout_connect != req.timeout:
            params.timeout_connect = req.timeout
        attempt = 0
        gap = self.request_gap
        while True:
            if gap:
                await anyio.sleep(gap)
            self.counters["reads"] += 1
            try:
                rr = await call(req.address, count=req.count, device_id=req.unit_id)
            except Exception as exc:  # classify() re-raises what it does not know
                failure = classify(exc)
                self._count_failure(failure, req, exc)
                return failure
            if rr.isError():
                code = getattr(rr, "exception_code", None)
                if is_retriable(Failure.EXCEPTION, code) and attempt < self.cfg.busy_retries:
                    attempt += 1
                    self.counters["busy_retries"] += 1
                    await anyio.sleep(min(0.05 * 2**attempt, req.timeout))
                    continue
                self.counters["exceptions"] += 1
                self.last_error = f"unit {req.unit_id} fc {fc} @{req.address}: exception {code}"
                failure = exception_failure(code)
                if failure is Failure.EXCEPTION and self.probation and req.unit_id in self.probation:
                    self._unit_ok(req.unit_id)  # it answered: alive
                return failure
            if self.probation and req.unit_id in self.probation:
                self._unit_ok(req.unit_id)
            if req.table is Table.HOLDING or req.table is Table.INPUT:
                raw = rr.raw  # client.RawHoldingRegisters / RawInputRegisters
                if len(raw) != 2 * req.count:
                    self._count_failure(Failure.GARBAGE, req, f"{len(raw)} bytes")
                    return Failure.GARBAGE
                return raw
            bits = rr.bits
            if len(bits) < req.count:
                self._count_failure(Failure.GARBAGE, req, f"{len(bits)} bits")
                return Failure.GARBAGE
            return bits

    def _count_failure(self, failure: Failure, req: ReadRequest, detail: object) -> None:
        key = {Failure.TIMEOUT: "timeouts", Failure.GARBAGE: "garbage"}.get(failure)
        if key:
            self.counters[key] += 1
        self.last_error = f"unit {req.unit_id} @{req.address}: {failure.value}: {detail}"
        log.debug("modbus_read_failed adapter_id=%s %s", self.id, self.last_error)

    def _good(self, req: ReadRequest, payload: Any, now: int, out: list[Reading]) -> None:
        try:
            values = req.unpack(payload)  # type: ignore[misc]
        except Exception as exc:  # an answer that does not fit its request
            self._count_failure(Failure.GARBAGE, req, exc)
            self._bad(req, now, out)
            return
        seq = self.seq
        bad = 0
        replace = _replace
        for pp, v in zip(req.points, values, strict=True):
            post = pp.post
            if post is not None:
                v = post(v)
            if v.__class__ is float and v - v != 0.0:  # NaN or infinity
                v = None
            if v is None:
                q = BAD
                bad += 1
            else:
                q = GOOD
            if pp.on_change:
                state = (v, q)
                if state == pp.last:
                    continue
                pp.last = state
            seq += 1
            out.append(replace(pp.template, value=v, quality=q, gateway_time=now, seq=seq))
        self.seq = seq
        if bad:
            self.counters["bad_readings"] += bad

    def _bad(self, req: ReadRequest, now: int, out: list[Reading]) -> None:
        for pp in req.points:
            if pp.on_change:
                state = (None, BAD)
                if state == pp.last:
                    continue
                pp.last = state
            self.seq += 1
            self.counters["bad_readings"] += 1
            out.append(
                _replace(pp.template, value=None, quality=BAD, gateway_time=now, seq=self.seq)
            )

    async def _publish(self, out: list[Reading]) -> None:
        self.counters["readings_published"] += len(out)
        await self.publish(out)
