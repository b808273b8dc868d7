"""The supervisor: one restart policy for in-process actors and for bulkhead
processes alike (a bulkhead handle is just another child with ``run``)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from otgate.actors.actor import LastError, describe
from otgate.actors.messages import Snapshot, State
from otgate.supervisors.child_state import (
    ChildExit,
    ChildRecord,
    ChildRun,
    OperatorRequest,
    ReadySignal,
    RestartDue,
    SupervisorStopped,
)
from otgate.supervisors.intensity import RestartIntensity, backoff_delay
from otgate.supervisors.spec import (
    ChildSpec,
    OnExhausted,
    Restart,
    Strategy,
    SupervisorFlags,
)

log = logging.getLogger("otgate.supervisor")


class SupervisorFailed(Exception):
    """Restarts exceeded the intensity; the supervisor stopped its children."""


class Supervisor:
    """Starts children in order, each after the previous one is ready, and
    restarts them by ``flags`` (strategy, intensity/period, backoff, escalation).

    Stopping (cancelling ``run``) stops the children last-started-first, each
    within its spec's shutdown timeout. A restart never blocks the loop: it is
    scheduled after its backoff and arrives as a message to self.
    """

    kind = "supervisor"
    last_error = LastError()

    def __init__(
        self,
        supervisor_id: str,
        specs: list[ChildSpec],
        flags: SupervisorFlags | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.id = supervisor_id
        self.flags = flags or SupervisorFlags()
        self.state = State.STARTING
        self.last_error = None
        self._clock = clock
        self._rng = rng
        self._shared_intensity = RestartIntensity(self.flags.intensity, self.flags.period, clock)
        self._children: list[ChildRecord] = [self._new_child(s) for s in specs]
        self._tg: TaskGroup | None = None
        self._closing = False
        self._events_send, self._events = anyio.create_memory_object_stream[Any](
            max(16, 4 * len(specs))
        )

    def _new_child(self, spec: ChildSpec) -> ChildRecord:
        per_child = self.flags.on_exhausted is OnExhausted.FAIL_CHILD
        intensity = (
            RestartIntensity(self.flags.intensity, self.flags.period, self._clock)
            if per_child
            else self._shared_intensity
        )
        return ChildRecord(spec=spec, intensity=intensity)

    # -- public API -------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                try:
                    # The loop runs from the start: a child that fails while its
                    # siblings are still starting is restarted without waiting for them.
                    tg.start_soon(self._loop)
                    for child in list(self._children):
                        await self._start_child(child)
                    self.state = State.RUNNING
                    task_status.started()
                    await anyio.sleep_forever()
                finally:
                    self._closing = True
                    with anyio.CancelScope(shield=True):
                        await self._stop_children(self._children)
        finally:
            if self.state is not State.FAILED:
                self.state = State.STOPPED
            self._refuse_pending()

    def child_ids(self) -> list[str]:
        return [c.spec.id for c in self._children]

    def child(self, child_id: str) -> Any:
        """The running object of a child (None while it is not running)."""
        return self._find(child_id).obj

    async def restart_child(self, child_id: str) -> str:
        """Operator restart: stop the child if running, clear FAILED, start it."""
        return await self._request(OperatorRequest("restart", child_id=child_id))

    async def apply(self, specs: list[ChildSpec]) -> str:
        """Hot reload: restart only children whose spec digest changed, add and remove others."""
        return await self._request(OperatorRequest("apply", specs=specs))

    def ready(self) -> bool:
        """True while every child that should run is RUNNING or DEGRADED (a
        transient child that finished normally does not count)."""
        return self.state is State.RUNNING and all(
            self._child_snapshot(c).state in (State.RUNNING, State.DEGRADED)
            for c in self._children
            if not c.finished
        )

    def snapshot(self) -> Snapshot:
        return Snapshot(
            id=self.id,
            kind=self.kind,
            state=self.state,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            children=[self._child_snapshot(c) for c in self._children],
        )

    statistics = snapshot

    # -- internals --------------------------------------------------------------
    async def _request(self, op: OperatorRequest) -> str:
        if self.state is not State.RUNNING:
            raise SupervisorStopped(f"{self.id} is {self.state.value}")
        await self._events_send.send(op)
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result

    def _refuse_pending(self) -> None:
        """Answer requests still queued when the loop ended, so no caller hangs."""
        while True:
            try:
                event = self._events.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return
            if isinstance(event, OperatorRequest):
                event.error = SupervisorStopped(f"{self.id} stopped")
                event.done.set()

    def _find(self, child_id: str) -> ChildRecord:
        for c in self._children:
            if c.spec.id == child_id:
                return c
        raise KeyError(child_id)

    def _child_snapshot(self, c: ChildRecord) -> Snapshot:
        if c.obj is not None and c.state not in (State.RESTARTING, State.FAILED):
            snap = c.obj.snapshot()
        else:
            snap = Snapshot(id=c.spec.id, kind=c.kind, state=c.state)
        if c.state in (State.STARTING, State.RESTARTING, State.FAILED, State.STOPPED):
            snap.state = c.state
        elif snap.state is State.FAILED:
            # the child crashed and its exit is on its way to this supervisor: FAILED
            # is the supervisor's verdict (restarts exhausted), not the child's own
            snap.state = State.RESTARTING
        snap.restarts = c.restarts
        if c.last_error is not None and (snap.last_error_at or 0) < (c.last_error_at or 0):
            # the record's (the child's exit) is more recent than the child's own
            snap.last_error, snap.last_error_at = c.last_error, c.last_error_at
        return snap

    async def _child_task(self, child: ChildRecord, generation: int, run: ChildRun) -> None:
        error: BaseException | None = None
        try:
            # Shielded from the parent's cancellation: only this supervisor stops a
            # child, through run.scope, so stops go leaves-first in reverse order.
            with run.scope as scope:
                try:
                    await child.obj.run(task_status=ReadySignal(run.ready))
                except Exception as exc:
                    error = exc
        finally:
            # Also when the whole supervisor is cancelled: stoppers wait on this.
            run.ready.set()
            run.done.set()
        stopped = scope.cancelled_caught and run.fail_reason is None
        if run.fail_reason is not None:
            error = run.fail_reason
        await self._events_send.send(ChildExit(child.spec.id, generation, error, stopped))

    async def _start_child(self, child: ChildRecord) -> None:
        assert self._tg is not None
        if self._closing:
            return  # stopping: a start scheduled just before must not outlive the stop
        child.generation += 1
        child.finished = False
        run = child.run = ChildRun()
        child.state = State.STARTING
        try:
            child.obj = child.spec.start()
        except Exception as exc:
            child.obj = None
            run.done.set()
            await self._events_send.send(ChildExit(child.spec.id, child.generation, exc, False))
            return
        child.kind = getattr(child.obj, "kind", "actor")
        self._tg.start_soon(self._child_task, child, child.generation, run)
        with anyio.move_on_after(child.spec.start_timeout):
            await run.ready.wait()
        if not run.ready.is_set():
            run.fail_reason = TimeoutError(
                f"not ready within {child.spec.start_timeout:g}s (start timeout)"
            )
            run.scope.cancel()
            await run.done.wait()
        elif not run.done.is_set():
            child.state = State.RUNNING

    async def _stop_child(self, child: ChildRecord) -> None:
        run = child.run
        if run is not None and not run.done.is_set():
            child.state = State.STOPPING
            run.scope.cancel()
            with anyio.move_on_after(child.spec.shutdown + 5.0):
                await run.done.wait()
            if not run.done.is_set():
                log.error(
                    "child_stop_abandoned supervisor=%s child=%s after_s=%.1f",
                    self.id,
                    child.spec.id,
                    child.spec.shutdown + 5.0,
                )
        child.run = None

    async def _stop_children(self, children: list[ChildRecord]) -> None:
        for child in reversed(children):
            await self._stop_child(child)

    def _affected(self, child: ChildRecord) -> list[ChildRecord]:
        idx = self._children.index(child)
        if self.flags.strategy is Strategy.ONE_FOR_ALL:
            return list(self._children)
        if self.flags.strategy is Strategy.REST_FOR_ONE:
            return self._children[idx:]
        return [child]

    async def _loop(self) -> None:
        async for event in self._events:
            if isinstance(event, ChildExit):
                await self._on_exit(event)
            elif isinstance(event, RestartDue):
                due = [
                    c
                    for c in self._children
                    if c.spec.id in event.generations
                    and c.state is State.RESTARTING
                    and c.generation == event.generations[c.spec.id]
                ]
                if len(due) == 1:
                    # One child (one_for_one): start it beside the loop, which stays
                    # free for the other children's exits, restarts and requests.
                    assert self._tg is not None
                    self._tg.start_soon(self._start_child, due[0])
                else:
                    for child in due:  # several: in order, each after the previous is ready
                        await self._start_child(child)
            elif isinstance(event, OperatorRequest):
                try:
                    event.result = await self._on_operator(event)
                except KeyError as exc:
                    event.error = KeyError(f"{self.id} has no child {exc.args[0]!r}")
                finally:
                    event.done.set()

    async def _on_exit(self, ev: ChildExit) -> None:
        try:
            child = self._find(ev.child_id)
        except KeyError:
            return
        if ev.generation != child.generation or ev.stopped:
            return
        if child.state in (State.RESTARTING, State.STOPPING, State.FAILED):
            return  # already handled: a sibling's restart stopped it, or it is failed
        abnormal = ev.error is not None
        if abnormal:
            child.last_error = describe(ev.error)
            log.warning(
                "child_exited supervisor=%s child=%s error=%s",
                self.id,
                child.spec.id,
                child.last_error,
            )
        restart = child.spec.restart
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and not abnormal):
            child.state = State.STOPPED
            child.finished = True
            child.obj = None
            if restart is Restart.TEMPORARY:
                self._children.remove(child)
            return
        if not child.intensity.record():
            await self._exhausted(child)
            return
        affected = self._affected(child)
        await self._stop_children([c for c in affected if c is not child])
        for c in affected:
            c.state = State.RESTARTING
        child.restarts += 1
        delay = backoff_delay(
            child.intensity.recent(),
            self.flags.backoff_initial,
            self.flags.backoff_max,
            self.flags.jitter,
            self._rng,
        )
        assert self._tg is not None
        self._tg.start_soon(
            self._restart_after,
            delay,
            RestartDue([c.spec.id for c in affected], {c.spec.id: c.generation for c in affected}),
        )

    async def _restart_after(self, delay: float, due: RestartDue) -> None:
        await anyio.sleep(delay)
        await self._events_send.send(due)

    async def _exhausted(self, child: ChildRecord) -> None:
        msg = (
            f"{child.spec.id}: more than {self.flags.intensity} restarts in "
            f"{self.flags.period:g}s (last error: {child.last_error})"
        )
        log.error("restart_intensity_exceeded supervisor=%s %s", self.id, msg)
        if self.flags.on_exhausted is OnExhausted.FAIL_CHILD:
            child.state = State.FAILED
            child.obj = None
            return
        for c in self._children:
            c.state = State.STOPPING
        await self._stop_children(self._children)
        child.state = State.FAILED
        self.state = State.FAILED
        self.last_error = msg
        raise SupervisorFailed(f"{self.id}: {msg}")

    async def _on_operator(self, op: OperatorRequest) -> str:
        if op.action == "restart":
            child = self._find(op.child_id)
            await self._stop_child(child)
            child.intensity.clear()
            child.last_error = None
            await self._start_child(child)
            return f"restarted {child.spec.id}"
        new = {s.id: s for s in op.specs}
        old = {c.spec.id: c for c in self._children}
        removed = [c for cid, c in old.items() if cid not in new]
        changed = [
            c
            for cid, c in old.items()
            if cid in new and new[cid].config_digest != c.spec.config_digest
        ]
        # A reload also clears children that went FAILED, config changed or not.
        cleared = [
            c
            for cid, c in old.items()
            if cid in new and c.state is State.FAILED and c not in changed
        ]
        await self._stop_children(removed + changed)
        kept: list[ChildRecord] = []
        to_start: list[ChildRecord] = []
        for spec in op.specs:
            child = old.get(spec.id)
            if child is None or any(child is c for c in changed + cleared):
                child = child or self._new_child(spec)
                child.spec = spec
                child.intensity.clear()
                to_start.append(child)
            kept.append(child)
        self._children = kept
        for child in to_start:
            await self._start_child(child)
        added = [s for s in new if s not in old]
        return (
            f"added={len(added)} changed={len(changed)} removed={len(removed)} "
            f"unchanged={len(kept) - len(added) - len(changed) - len(cleared)} cleared={len(cleared)}"
        )
