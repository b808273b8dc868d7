"""One queue for every writer of an embedded log file, across processes.

SQLite lets one connection write at a time; a second writer that finds the
file locked sleeps in its busy handler (1, 2, 5 … up to 100 ms between tries)
and retries, so beside a busy writer a short append waited up to 100 ms after
the lock was already free (measured: p99 139 ms, max 445 ms for a 20 tx/s
writer beside a 100 tx/s one; 0.1 ms alone). Every write transaction of the
log therefore first takes an exclusive ``flock`` on ``<log file>-wlock``: the
kernel wakes a waiter the moment the holder lets go, so a writer waits for the
transaction in front of it, not for a sleep to run out, and SQLite's own lock
is then always free when ``BEGIN IMMEDIATE`` asks for it.

The lock is the kernel's: a holder killed by any signal releases it with its
file descriptor, so a dead bulkhead never blocks the others. ``flock`` locks
belong to an open file, not a thread, so threads of one process queue on a
mutex in front of it; a child process after ``fork`` opens its own file. Holding
the gate again from the same thread (a write inside a write) is allowed.
SQLite's busy timeout stays behind it for writers that do not use the gate.

The wait has no time limit (SQLite's gave up after ``busy_timeout`` and the
append was retried, which waited just as long): a holder makes progress, dies
(the kernel frees the lock), or is a bulkhead its supervisor kills as hung;
the operator's ``otgate log drop-group`` holds it for one DELETE.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_gates: dict[Path, WriteGate] = {}
_gates_lock = threading.Lock()


def gate_path(log_path: Path) -> Path:
    """The lock file of the log at ``log_path``."""
    return log_path.with_name(log_path.name + "-wlock")


def gate_for(log_path: Path) -> WriteGate:
    """This process's gate of the log at ``log_path`` (one per file and process)."""
    key = Path(os.path.abspath(log_path))
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None or gate.pid != os.getpid():
            gate = _gates[key] = WriteGate(gate_path(key))
        return gate


class WriteGate:
    """Exclusive write turn on one log file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pid = os.getpid()
        self._mutex = threading.RLock()
        self._fd: int | None = None
        self._depth = 0
        self.waits = 0  # turns that found the gate held (for statistics)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Run the block as the only writer of the log file."""
        with self._mutex:
            if self._depth == 0:
                self._lock()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)  # type: ignore[arg-type]

    def _lock(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.waits += 1
            fcntl.flock(self._fd, fcntl.LOCK_EX)
