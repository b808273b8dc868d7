"""Control messages and status snapshots.

Mailboxes and the bulkhead control channel carry only these: start, stop,
reconfigure, statistics, heartbeats, injected faults. Data travels through the
log, never through a mailbox.
"""

from __future__ import annotations

import enum

import msgspec


class State(enum.Enum):
    """Lifecycle state of one component (actor, supervisor or bulkhead)."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    DEGRADED = "DEGRADED"  # running, but not doing all its work (e.g. device unreachable)
    RESTARTING = "RESTARTING"  # waiting out its backoff before the next start
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"  # over its restart intensity; needs an operator or a reload


class Snapshot(msgspec.Struct, kw_only=True):
    """One node of the supervision tree as ``/health`` shows it."""

    id: str
    kind: str
    state: State
    pid: int | None = None
    restarts: int = 0
    last_error: str | None = None
    last_error_at: float | None = None  # when last_error was last set (Unix seconds)
    mailbox_depth: int = 0
    mailbox_size: int = 0
    heartbeat_age_s: float | None = None
    metrics: dict[str, float] = {}
    children: list[Snapshot] = []


class Stop(msgspec.Struct, tag=True):
    """Stop the receiver (leaves first) within its shutdown timeout."""


class Reconfigure(msgspec.Struct, tag=True):
    """Replace the receiver's configuration; ``config`` is the encoded config section."""

    config: bytes


class InjectFault(msgspec.Struct, tag=True):
    """Fault-injection harness command; honoured only when the gateway enables it.

    kinds: ``hang`` blocks the bulkhead's event loop, ``leak`` allocates memory
    until the watchdog acts, ``crash`` raises inside the named in-process actor,
    ``exit`` ends the bulkhead process abruptly.
    """

    kind: str
    target: str | None = None


class Started(msgspec.Struct, tag=True):
    """A bulkhead finished starting its in-process tree."""

    pid: int


class Heartbeat(msgspec.Struct, tag=True):
    """A bulkhead's once-a-second proof of life, carrying its tree's statistics."""

    pid: int
    seq: int
    tree: Snapshot


class Stopped(msgspec.Struct, tag=True):
    """A bulkhead stopped its tree; ``error`` says why when it was not asked to."""

    error: str | None = None


class CommandsPending(msgspec.Struct, tag=True):
    """A write request for ``adapter_id`` was just logged: its session should look
    at ``commands.requests`` now (a nudge; the request itself is on the log)."""

    adapter_id: str


ControlMessage = Stop | Reconfigure | InjectFault | Started | Heartbeat | Stopped | CommandsPending
