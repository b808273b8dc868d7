"""The gateway's side of a bulkhead: start the process, watch it, stop it.

A ``Bulkhead`` is a supervisor child like any actor: ``run()`` returns when the
process stopped normally and raises when it died, hung (missed heartbeats) or
went over its memory limit; the gateway supervisor restarts it by policy.

Why not thespian: its TCP base binds every actor to 0.0.0.0 (``bindname`` is
INADDR_ANY whatever THESPIAN_BASE_IPADDR says) and unpickles what arrives,
which on a plant network is remote code execution; confining it needs patches
to its transport internals, and its queue base deadlocked under load. Here a
bulkhead talks to the gateway over an inherited socketpair: nothing listens.
See supervisors/PROCESS_TIER.md for the evidence.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from typing import Any

import anyio
import psutil
from anyio.abc import TaskStatus

from otgate.actors.messages import (
    CommandsPending,
    Heartbeat,
    InjectFault,
    Reconfigure,
    Snapshot,
    Started,
    State,
    Stop,
    Stopped,
)
from otgate.supervisors.bulkhead_silence import Silence, run_delay
from otgate.supervisors.channel import Channel, ChannelClosed
from otgate.supervisors.health import walk
from otgate.supervisors.plan import BulkheadPlan
from otgate.supervisors.process_group import kill_group

# Imported once by the fork server, so each bulkhead forks with them already
# loaded: their pages are shared and a bulkhead costs a few MiB, not ~40.
PRELOAD = [
    "otgate.supervisors.forkserver_title",
    "otgate.supervisors.bulkhead_main",
    "otgate.actors.log.open",
    "otgate.actors.log.kafka",  # aiokafka (also the partitioner); imported lazily elsewhere
    "aiohttp",  # the schema registry client
    "pymodbus.server",  # the Modbus simulators
    "otgate.protocols.modbus_tcp.session",
    "otgate.protocols.modbus_rtu.session",
    "otgate.protocols.opcua.session",
    "otgate.protocols.mqtt.session",
    "otgate.protocols.synthetic.session",
    "psycopg",
]
WATCH_INTERVAL = 0.25
log = logging.getLogger("otgate.bulkhead")

_ctx: Any = None


def process_context() -> Any:
    """The forkserver context: children fork from a clean, thread-free server."""
    global _ctx
    if _ctx is None:
        _ctx = multiprocessing.get_context("forkserver")
        _ctx.set_forkserver_preload(PRELOAD)
    return _ctx


class BulkheadDied(Exception):
    """The bulkhead process exited without being asked to."""


class BulkheadHung(Exception):
    """The bulkhead missed its heartbeats; it was killed."""


class MemoryLimitExceeded(Exception):
    """The bulkhead's resident memory went over its limit; it was killed."""


class BulkheadFailed(Exception):
    """The bulkhead stopped itself with an error (its tree went over intensity)."""


class Bulkhead:
    """One OS process running a group of in-process actors."""

    kind = "bulkhead"

    def __init__(
        self,
        plan: BulkheadPlan,
        config_json: bytes,
        *,
        heartbeat_timeout: float,
        start_timeout: float,
        shutdown_timeout: float,
        secrets: frozenset[str] = frozenset(),
    ) -> None:
        self.id = plan.id
        self.secrets = secrets
        self.plan = plan
        self.config_json = config_json
        self.heartbeat_timeout = heartbeat_timeout
        self.start_timeout = start_timeout
        self.shutdown_timeout = shutdown_timeout
        self.state = State.STARTING
        self.pid: int | None = None
        self.silence = Silence(heartbeat_timeout)
        self.tree: Snapshot | None = None
        self.rss = 0
        self.last_error: str | None = None
        self._proc: Any = None
        self._channel: Channel | None = None
        self._psutil: psutil.Process | None = None

    # -- control ----------------------------------------------------------------
    async def inject(self, fault: InjectFault) -> None:
        if self._channel is not None:
            await self._channel.send(fault)

    async def nudge(self, message: CommandsPending) -> None:
        """Pass a nudge to an in-process actor of this bulkhead (dropped while down)."""
        if self._channel is not None:
            await self._channel.send(message)

    async def reconfigure(self, config_json: bytes) -> None:
        self.config_json = config_json
        if self._channel is not None:
            await self._channel.send(Reconfigure(config=config_json))

    # -- lifecycle --------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        from otgate.supervisors.bulkhead_main import bulkhead_main

        parent_sock, child_sock = socket.socketpair()
        self._proc = process_context().Process(
            target=bulkhead_main,
            args=(self.id, self.config_json, child_sock, sorted(self.secrets)),
            name=f"otgate-{self.id}",
        )
        try:
            await anyio.to_thread.run_sync(self._proc.start)
        finally:
            child_sock.close()
        pid = self.pid = self._proc.pid
        self._psutil = psutil.Process(pid)
        self.silence = Silence(self.heartbeat_timeout, lambda: run_delay(pid))
        channel = self._channel = await Channel.from_socket(parent_sock)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_exit)
                tg.start_soon(self._watchdog)
                await self._await_started(channel)
                self.state = State.RUNNING
                self.silence.beat()
                task_status.started()
                await self._read(channel)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._ensure_stopped()

    async def _await_started(self, channel: Channel) -> None:
        """Wait for Started. Heartbeats flow during the start too, so the watchdog
        catches a loop that blocks while starting as it would later, not at the
        end of ``start_timeout``."""
        with anyio.fail_after(self.start_timeout):
            while True:
                msg = await self._receive(channel)
                self.silence.beat()
                if isinstance(msg, Heartbeat):
                    self.tree = msg.tree
                elif isinstance(msg, Started):
                    return
                elif isinstance(msg, Stopped):
                    raise BulkheadFailed(msg.error or "stopped during start")

    async def _receive(self, channel: Channel) -> Any:
        try:
            return await channel.receive()
        except ChannelClosed:
            await self._wait_exit(timeout=2.0)
            raise BulkheadDied(self._exit_text()) from None

    async def _read(self, channel: Channel) -> None:
        while True:
            msg = await self._receive(channel)
            if isinstance(msg, Heartbeat):
                self.silence.beat()
                self.tree = msg.tree
            elif isinstance(msg, Stopped):
                if msg.error:
                    raise BulkheadFailed(msg.error)
                return

    async def _watch_exit(self) -> None:
        await anyio.wait_readable(self._proc.sentinel)
        # Give the reader a moment to collect a final Stopped message.
        await anyio.sleep(0.2)
        raise BulkheadDied(self._exit_text())

    async def _watchdog(self) -> None:
        limit = (self.plan.memory_limit_mib or 0) * 1024 * 1024
        tick = time.monotonic()
        while True:
            await anyio.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            if now - tick > WATCH_INTERVAL + 0.5:
                # The gateway itself stalled: heartbeats may sit unread in the
                # socket. Let the reader catch up before judging anyone.
                self.silence.excuse_until(now - WATCH_INTERVAL)
            tick = now
            why = self.silence.hung()  # less the time it waited for a CPU: bulkhead_silence.py
            if why:
                self._kill()
                raise BulkheadHung(why if self.state is State.RUNNING else f"{why} while starting")
            try:
                self.rss = self._psutil.memory_info().rss if self._psutil else 0
            except psutil.Error:
                continue  # exiting; _watch_exit reports it
            if limit and self.rss > limit:
                self._kill()
                raise MemoryLimitExceeded(
                    f"resident memory {self.rss / 2**20:.0f} MiB over limit "
                    f"{self.plan.memory_limit_mib} MiB"
                )

    def _kill(self) -> None:
        if self.pid is not None and self._proc is not None and self._proc.exitcode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _exit_text(self) -> str:
        code = self._proc.exitcode if self._proc is not None else None
        if code is None:
            return "process exited (status unknown)"
        if code < 0:
            return f"process killed by {signal.Signals(-code).name}"
        return f"process exited with code {code}"

    async def _wait_exit(self, timeout: float) -> bool:
        # Polls: _watch_exit may be the sentinel's reader already (one reader per fd).
        deadline = time.monotonic() + timeout
        while True:
            self._proc.join(0)
            if self._proc.exitcode is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            await anyio.sleep(0.01)

    async def _ensure_stopped(self) -> None:
        """Stop the process: Stop command, then SIGKILL after the shutdown timeout;
        then SIGKILL whatever it started that is still alive (its process group)."""
        self.state = State.STOPPING
        if self._proc is not None and self._proc.exitcode is None:
            if self._channel is not None:
                try:
                    with anyio.move_on_after(0.5):
                        await self._channel.send(Stop())
                except ChannelClosed:
                    pass
            if not await self._wait_exit(self.shutdown_timeout):
                self._kill()
                await self._wait_exit(5.0)
        if self._channel is not None:
            await self._channel.aclose()
            self._channel = None
        if self.pid is not None:
            # The bulkhead leads a group of its own (bulkhead_main): what it started
            # and did not stop (it was killed, or a child ignored the stop) goes now,
            # before a restart needs the same ports.
            left = await anyio.to_thread.run_sync(kill_group, self.pid)
            if left:
                log.warning("bulkhead_group_killed bulkhead=%s processes=%d", self.id, left)
        if self._proc is not None and self._proc.exitcode is not None:
            self._proc.close()
            self.pid = None  # never signal a pid the kernel may have given to another process
        self.state = State.STOPPED

    # -- status -----------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        children = self.tree.children if self.tree is not None else []
        state = self.state
        if state is State.RUNNING and any(
            n.state is not State.RUNNING for child in children for n in walk(child)
        ):
            state = State.DEGRADED
        return Snapshot(
            id=self.id,
            kind=self.kind,
            state=state,
            pid=self.pid,
            heartbeat_age_s=round(self.silence.age(), 3),
            metrics={"rss_bytes": float(self.rss)},
            last_error=self.last_error,
            children=children,
        )
