"""Write requests executed by the owning device session, at most once.

A ``CommandRunner`` runs inside a device-session actor that has writable
points. It consumes ``commands.requests`` with its own consumer group
(``commands.<adapter_id>``), takes the records keyed by its adapter id, in
log order, and appends each outcome to ``commands.results``: its final one,
preceded by ACCEPTED when the write is still running ``ACCEPTED_AFTER_S``
after it was taken (a slow device shows progress; a fast write, the usual
case, costs one result record, not two).

At most once, also across a session restart or a ``kill -9`` of the gateway:
before the device is touched, the request and its offset are made durable
in the session's ledger (``command_ledger.py``, one ``fdatasync``); the
result is followed by a "done" entry (written, not synced: it survives a
``kill -9``, and one lost to a power cut costs a late TIMED_OUT, not a second
write). A restarted runner resumes after the ledger's offset (whatever the
group last committed: commits are lazy, made every ``COMMIT_EVERY_S`` when
the runner is idle), and a request the ledger shows taken but not done is
reported TIMED_OUT ("not confirmed, not retried"): a crash
mid-write leaves a write that may or may not have reached the device,
reported as not confirmed, never a second write. The first final result of a
request id is its result (a crash between a final result and its "done"
entry adds a later TIMED_OUT, which readers ignore).

Never after the deadline: a request whose deadline has passed is EXPIRED
without touching the device; while the device is not reachable (not
connected; a Modbus unit on probation after timeouts) the runner waits for
it until the deadline. The write itself runs under the session's
protocol timeout once started.

Latency: the root nudges the owning session right after logging a request
(``CommandsPending`` over its bulkhead's control channel; the bulkhead calls
the runner's ``wake``, no mailbox in between); without a nudge (a request
logged while the session was down, a nudge lost in a restart) the runner
looks every ``IDLE_POLL_S``: each look is a fetch in a worker thread, and a
bulkhead runs one runner per device, so that safety net is kept coarse.
On the embedded log the look and the ledger's "taken" entry share one
worker-thread hop (``fetch_then``): the first new request that will run
(writable point, role and value allowed, deadline ahead, device reachable)
is marked taken right after the fetch, in the same thread; each hop costs
~6 ms on a busy 2-core machine (the thread waits for a CPU and the GIL), the
fdatasync ~3 ms. A request marked so and then not run (a reload removed the
point meanwhile) is reported like any other, after its "taken" entry. A successful write is logged at DEBUG (the root's audit line
and ``commands.results`` already tell it); every other outcome at INFO.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec

from otgate.actors.context import BuildContext
from otgate.actors.log.base import LogRecord
from otgate.actors.log.publisher import Codec, Decoder
from otgate.actors.records import CommandRequest, CommandResult, CommandStatus, Value, now_ns
from otgate.protocols.command_ledger import Entry, Ledger
from otgate.protocols.writes import WriteSpec, check_role, check_value

log = logging.getLogger("otgate.protocols.commands")

REQUESTS, RESULTS = "commands.requests", "commands.results"
CONNECT_POLL_S = 0.05
IDLE_POLL_S = 2.0
ACCEPTED_AFTER_S = 0.1
COMMIT_EVERY_S = 60.0
SEEN_MAX = 10_000
FETCH_MAX = 200


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a protocol's write produced."""

    status: CommandStatus
    read_back: Value | None = None
    code: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class WritablePoint:
    """One writable point of a session: its identity, limits and protocol address."""

    asset_id: str
    parameter: str
    spec: WriteSpec
    target: Any  # the protocol's own point (Modbus Point + unit, OPC UA node id)


Execute = Callable[[WritablePoint, Value, anyio.Event], Awaitable[Outcome]]
"""``execute(point, value, durable)``: write ``value``; it may wait for the device
at once (a bus, a connection) but touches it only after ``durable`` is set (the
request is on disk as taken: at most once across a crash)."""


class CommandRunner:
    """Consumes one session's write requests (see the module doc)."""

    def __init__(
        self,
        adapter_id: str,
        points: list[WritablePoint],
        ctx: BuildContext,
        execute: Execute,
        reachable: Callable[[WritablePoint], bool],
    ) -> None:
        self.adapter_id = adapter_id
        self.key = adapter_id.encode()
        self.points = {(p.asset_id, p.parameter): p for p in points}
        self.ctx = ctx
        self.execute = execute
        self.reachable = reachable
        self.ledger = Ledger(Path(ctx.state_dir) / "commands" / f"{adapter_id}.ledger")
        self._wake = anyio.Event()
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self.counters: dict[str, float] = {s.value.lower(): 0 for s in CommandStatus}
        self.counters["requests"] = 0
        self.codec: Codec | None = None
        self.consumer: Any = None
        self.decoder: Decoder | None = None
        self.woken_at = 0  # wall ns of the last nudge
        self.fetched_at = 0  # wall ns the last fetch returned
        self._marks: list[tuple[str, int]] = []
        self._ledger_ns = 0
        self.steps: dict[str, float] = {}  # step -> total ms over the executed writes

    def metrics(self) -> dict[str, float]:
        out = {f"writes_{k}": v for k, v in self.counters.items()}
        out.update((f"writes_ms_{k}", v) for k, v in self.steps.items())
        return out

    def wake(self) -> None:
        """A request for this session was just logged: look now."""
        self.woken_at = now_ns()
        self._wake.set()

    def mark(self, step: str) -> None:
        """The write in progress just finished ``step`` (summed in ``writes_ms_<step>``)."""
        self._marks.append((step, now_ns()))

    async def run(self) -> None:
        schemas = self.ctx.extras["schemas"]
        self.codec = Codec(schemas)
        await self.codec.prepare(RESULTS)
        decoder = self.decoder = Decoder(schemas)
        self.consumer = self.ctx.log.consumer(f"commands.{self.adapter_id}", [REQUESTS])
        fetch_then = getattr(self.consumer, "fetch_then", None)  # the embedded log's
        try:
            last = await anyio.to_thread.run_sync(self.ledger.open)
            if last is not None:
                self.consumer.seek(REQUESTS, last.partition, last.offset + 1)
                if not last.done:
                    await self._not_confirmed(last)
            uncommitted: dict[tuple[str, int], int] = {}
            committed_at = anyio.current_time()
            while True:
                if fetch_then is not None:
                    records, taken = await fetch_then(FETCH_MAX, self._take_first)
                else:
                    records, taken = await self.consumer.fetch(FETCH_MAX, timeout=0), None
                self.fetched_at = now_ns()
                for rec in records:
                    if taken is not None and taken[0] is rec:
                        await self._handle(taken[1], rec.partition, rec.offset, taken=True)
                    elif rec.key == self.key:
                        try:
                            req = await decoder.decode_async(REQUESTS, rec.value)
                        except (ValueError, msgspec.MsgspecError) as exc:
                            # not a request otgate wrote: skip it rather than fail forever
                            log.error(
                                "command_undecodable adapter_id=%s offset=%d error=%s",
                                self.adapter_id, rec.offset, exc,
                            )
                        else:
                            await self._handle(req, rec.partition, rec.offset)
                    uncommitted[(rec.topic, rec.partition)] = rec.offset + 1
                if len(records) == FETCH_MAX:
                    continue  # more may be waiting
                # caught up: a request logged since nudged us (``_wake`` is set), so
                # no second fetch right after a request (one thread hop less per write)
                if uncommitted and anyio.current_time() - committed_at > COMMIT_EVERY_S:
                    # a while since: move the group along (the ledger, not the
                    # group, is what keeps a request from running twice)
                    await self.consumer.commit(uncommitted)
                    uncommitted = {}
                    committed_at = anyio.current_time()
                # jittered: the runners of a bulkhead start together and would
                # otherwise look all at once (a burst of worker-thread fetches)
                with anyio.move_on_after(IDLE_POLL_S * (0.75 + 0.5 * random.random())):
                    await self._wake.wait()
                self._wake = anyio.Event()
        finally:
            with anyio.CancelScope(shield=True):
                await self.consumer.close()
                self.ledger.close()

    # -- one request --------------------------------------------------------------
    def _take_first(self, records: list[LogRecord]) -> tuple[LogRecord, CommandRequest] | None:
        """In the fetch's worker thread: the first new request of this session,
        durably marked taken when it will run (decoded, its point writable, role
        and value allowed, deadline ahead, device reachable); None leaves every
        record to ``_handle``. The runner's task awaits this fetch, so nothing
        else touches the ledger, ``_seen`` or the decoder meanwhile."""
        for rec in records:
            if rec.key != self.key:
                continue
            try:
                req = self.decoder.decode(REQUESTS, rec.value)
            except Exception:  # an unknown schema or an undecodable record: the usual way
                return None
            if req.request_id in self._seen:
                continue  # a replayed record: ``_handle`` skips it
            point = self.points.get((req.asset_id, req.parameter))
            if (
                point is None
                or check_role(point.spec, req.role)
                or check_value(point.spec, req.value)
                or now_ns() >= req.deadline
                or not self.reachable(point)
            ):
                return None
            t0 = now_ns()
            self.ledger.write(rec.partition, rec.offset, req, done=False)
            self._ledger_ns = now_ns() - t0
            return rec, req
        return None

    async def _handle(
        self, req: CommandRequest, partition: int, offset: int, *, taken: bool = False
    ) -> None:
        """Run one request; ``taken``: its ledger entry is on disk already."""
        if req.request_id in self._seen:
            return  # a replayed record: it already has its result
        self._remember(req.request_id)
        self.counters["requests"] += 1
        point = self.points.get((req.asset_id, req.parameter))
        refused = (
            f"{req.asset_id}/{req.parameter} is not a writable point of {self.adapter_id}"
            if point is None
            else check_role(point.spec, req.role) or check_value(point.spec, req.value)
        )
        if refused:
            await self._result(req, Outcome(CommandStatus.REJECTED, detail=refused))
            await self._progress(partition, offset, req, done=True)
            return
        assert point is not None
        if not await self._wait_reachable(point, req.deadline):
            why = "deadline passed before execution"
            if not self.reachable(point):
                why += " (device not reachable)"
            await self._result(req, Outcome(CommandStatus.EXPIRED, detail=why))
            await self._progress(partition, offset, req, done=True)
            return
        t = req.gateway_time
        woken = self.woken_at if self.woken_at >= t else 0
        self._marks = [("", t)]
        if woken:
            self._marks.append(("nudge", woken))
        self._marks += [("fetch", max(self.fetched_at, woken or t)), ("handle", now_ns())]
        durable, finished = anyio.Event(), anyio.Event()
        if taken:
            durable.set()  # now: not one event-loop turn later, from ``_take``
        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            # ``execute`` touches the device only once ``durable`` is set (the
            # ledger entry on disk); it may prepare meanwhile
            tg.start_soon(self._take, req, partition, offset, durable, finished, taken)
            try:
                outcome = await self.execute(point, req.value, durable)
            except Exception as exc:  # the protocol's write raised what it does not classify
                error = exc
                outcome = Outcome(
                    CommandStatus.TIMED_OUT, detail=f"not confirmed: {type(exc).__name__}: {exc}"
                )
            self.mark("execute_end")
            finished.set()
        # after ``_take``: the taken entry is on disk, a late ACCEPTED is logged
        await self._result(req, outcome)
        self.mark("result_append")
        await self._progress(partition, offset, req, done=True)
        self.mark("ledger_done")
        self._sum_steps()
        if error is not None:
            raise error

    async def _take(
        self, req: CommandRequest, partition: int, offset: int, durable: anyio.Event,
        finished: anyio.Event, taken: bool,
    ) -> None:
        """Durably mark the request taken (unless ``taken``: done in the fetch's
        thread); log ACCEPTED (informative: the ledger is the durable mark) if the
        write is still running ``ACCEPTED_AFTER_S`` later."""
        if not taken:
            t0 = now_ns()
            await self._progress(partition, offset, req, done=False)
            self._ledger_ns = now_ns() - t0  # overlaps the chain of marks: summed apart
            durable.set()
        with anyio.move_on_after(ACCEPTED_AFTER_S):
            await finished.wait()
        if not finished.is_set():
            await self._result(req, Outcome(CommandStatus.ACCEPTED))

    def _sum_steps(self) -> None:
        marks, self._marks = self._marks, []
        for (_, a), (step, b) in itertools.pairwise(marks):
            self.steps[step] = self.steps.get(step, 0.0) + (b - a) / 1e6
        self.steps["ledger"] = self.steps.get("ledger", 0.0) + self._ledger_ns / 1e6
        self.steps["count"] = self.steps.get("count", 0.0) + 1

    async def _progress(self, partition: int, offset: int, req: CommandRequest, *, done: bool) -> None:
        if done:  # no fsync (see command_ledger): a page-cache write, no thread hop
            self.ledger.write(partition, offset, req, done=True)
            return
        await anyio.to_thread.run_sync(
            lambda: self.ledger.write(partition, offset, req, done=False)
        )

    async def _wait_reachable(self, point: WritablePoint, deadline: int) -> bool:
        while now_ns() < deadline:
            if self.reachable(point):
                return True
            await anyio.sleep(min(CONNECT_POLL_S, max(0.0, (deadline - now_ns()) / 1e9)))
        return False

    def _remember(self, request_id: str) -> None:
        self._seen.add(request_id)
        self._seen_order.append(request_id)
        if len(self._seen_order) > SEEN_MAX:
            self._seen.discard(self._seen_order.popleft())

    async def _not_confirmed(self, last: Entry) -> None:
        """The ledger shows a request taken but not done: a crash mid-write."""
        req = last.request
        log.warning(
            "command_not_confirmed adapter_id=%s request_id=%s reason=restarted_during_write",
            self.adapter_id, req.request_id,
        )
        self._remember(req.request_id)
        await self._result(
            req,
            Outcome(
                CommandStatus.TIMED_OUT,
                detail="the gateway restarted during this write: not confirmed, not retried",
            ),
        )
        await self._progress(last.partition, last.offset, req, done=True)

    async def _result(self, req: CommandRequest, outcome: Outcome) -> None:
        now = now_ns()
        rec = CommandResult(
            request_id=req.request_id,
            adapter_id=self.adapter_id,
            asset_id=req.asset_id,
            parameter=req.parameter,
            status=outcome.status,
            value=req.value,
            read_back=outcome.read_back,
            code=outcome.code,
            detail=outcome.detail[:500],
            by=req.by,
            requested_time=req.gateway_time,
            latency_ms=(now - req.gateway_time) / 1e6,
            gateway_time=now,
        )
        assert self.codec is not None
        await self.ctx.log.append(RESULTS, [(self.key, self.codec.encode(RESULTS, rec))])
        self.counters[outcome.status.value.lower()] += 1
        if outcome.status is not CommandStatus.ACCEPTED:
            log.log(
                logging.DEBUG if outcome.status is CommandStatus.WRITTEN else logging.INFO,
                "command_result adapter_id=%s request_id=%s point=%s/%s status=%s code=%s "
                "latency_ms=%.1f detail=%s",
                self.adapter_id, req.request_id, req.asset_id, req.parameter,
                outcome.status.value, outcome.code, rec.latency_ms, outcome.detail,
            )

