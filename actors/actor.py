"""The in-process actor: a task with a bounded mailbox, a readiness handshake
and a bounded, cancellation-safe stop."""

from __future__ import annotations

import math
import time
from typing import Any

import anyio
from anyio.abc import TaskStatus

from otgate.actors.messages import InjectFault, Snapshot, State


def describe(exc: BaseException) -> str:
    """A one-line error text, unwrapping single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


class LastError:
    """A ``last_error`` attribute that notes when it was last set: the owner
    gets ``last_error_at`` (Unix seconds, None while there is no error), so
    status can show an error's age. Setting the same text again renews the time:
    the age is that of the latest occurrence."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.at = name, f"{name}_at"
        setattr(owner, self.at, None)

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else obj.__dict__.get(self.name)

    def __set__(self, obj: Any, value: str | None) -> None:
        obj.__dict__[self.name] = value
        setattr(obj, self.at, None if value is None else time.time())


class FaultInjected(Exception):
    """Raised inside an actor by the fault-injection harness (``InjectFault(crash)``)."""


class MailboxFull(Exception):
    """``send_nowait`` found the mailbox full; the message was not queued."""


class StartupError(Exception):
    """An actor could not start. ``retriable`` says whether trying again can help."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


class Actor:
    """Base class for in-process actors (device sessions, breakers, windows...).

    Lifecycle, driven by a supervisor through ``run``:

    1. ``setup()``: acquire what the actor needs; raising fails the start
       (raise ``StartupError`` to say whether a retry can help). It should not
       wait on a remote peer: readiness means "running", not "connected".
    2. readiness is signalled to the supervisor (``task_status.started()``).
    3. ``main()`` and the mailbox loop run together until ``main`` returns (a
       normal exit), either raises (an abnormal exit) or the supervisor
       cancels the actor (a stop).
    4. ``teardown()`` always runs, shielded from cancellation and bounded by
       ``shutdown_timeout`` seconds.

    The mailbox is a bounded memory stream of control messages only. Its
    full-policy is the caller's choice: ``send`` waits for room (backpressure),
    ``send_nowait`` raises ``MailboxFull`` and queues nothing.
    """

    kind = "actor"
    mailbox_size = 64
    last_error = LastError()

    def __init__(self, actor_id: str, *, shutdown_timeout: float = 5.0) -> None:
        self.id = actor_id
        self.shutdown_timeout = shutdown_timeout
        self.state = State.STARTING
        self.last_error = None
        self.handled = 0
        self._send, self._receive = anyio.create_memory_object_stream[Any](self.mailbox_size)

    # -- hooks for subclasses -------------------------------------------------
    async def setup(self) -> None:
        """Acquire resources before readiness is signalled."""

    async def main(self) -> None:
        """The actor's own work; returning ends the actor normally."""
        await anyio.sleep_forever()

    async def handle(self, message: Any) -> None:
        """Handle one control message. Must be idempotent (it may be redelivered)."""

    async def teardown(self) -> None:
        """Release resources; runs shielded, bounded by ``shutdown_timeout``."""

    def metrics(self) -> dict[str, float]:
        """Numbers for ``/health`` and ``/metrics`` (rates, counters, gauges)."""
        return {}

    # -- mailbox --------------------------------------------------------------
    async def send(self, message: Any) -> None:
        """Queue a control message, waiting while the mailbox is full."""
        await self._send.send(message)

    def send_nowait(self, message: Any) -> None:
        """Queue a control message now or raise ``MailboxFull``."""
        try:
            self._send.send_nowait(message)
        except anyio.WouldBlock as exc:
            raise MailboxFull(f"{self.id}: mailbox full ({self.mailbox_size})") from exc

    # -- lifecycle ------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the actor until it ends, fails or is cancelled (see the class doc)."""
        try:
            await self.setup()
            self.state = State.RUNNING
            task_status.started()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._serve_mailbox)
                await self.main()
                tg.cancel_scope.cancel()
        except BaseException as exc:
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                self.state = State.FAILED
                self.last_error = describe(exc)
            raise
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.shutdown_timeout):
                await self.teardown()
            if self.state is not State.FAILED:
                self.state = State.STOPPED

    async def _serve_mailbox(self) -> None:
        async for message in self._receive:
            if isinstance(message, InjectFault) and message.kind == "crash":
                raise FaultInjected(f"{self.id}: injected crash")
            await self.handle(message)
            self.handled += 1

    def snapshot(self) -> Snapshot:
        """This actor as one node of the status tree."""
        metrics = {k: v for k, v in self.metrics().items() if math.isfinite(v)}
        metrics["messages_handled"] = float(self.handled)
        return Snapshot(
            id=self.id,
            kind=self.kind,
            state=self.state,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            mailbox_depth=self._send.statistics().current_buffer_used,
            mailbox_size=self.mailbox_size,
            metrics=metrics,
        )

    statistics = snapshot
