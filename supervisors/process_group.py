"""Nothing a bulkhead starts outlives it, whatever killed it.

A bulkhead leads its own process group, and every external program it
starts (mosquitto, postgres, a future helper) inherits that group. Two
mechanisms cover the two ways a bulkhead can go:

* The bulkhead dies alone (SIGKILL, OOM killer, a crash): the gateway sees
  the exit and SIGKILLs the bulkhead's whole group (``kill_group``) before
  it starts the bulkhead again, so the new one finds its ports free.
* The gateway dies too (SIGKILL of the root): nobody is left to kill the
  group, so each direct child asks the kernel for a death signal
  (``die_with_parent``, PR_SET_PDEATHSIG) and dies with the bulkhead.

PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not
the process: start such children from the event loop's thread, never from
a worker thread (``anyio.to_thread`` retires idle workers after 10 s).
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

PR_SET_PDEATHSIG = 1
# Loaded once here: a preexec_fn runs in the forked child and must not dlopen.
_libc = ctypes.CDLL(None, use_errno=True)


def set_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent thread ends.

    Safe as a ``subprocess.Popen(preexec_fn=...)``; there it runs after the
    switch to ``user=``, which keeps the setting (a credential change clears it).
    """
    if _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def lead_own_group() -> None:
    """Make this process the leader of a new session and process group (its
    pgid = its pid). A session rather than only a group: without a controlling
    terminal, job control (SIGTTOU/SIGTTIN) can never stop it when the
    gateway runs in a terminal."""
    os.setsid()


def kill_group(pgid: int, timeout: float = 3.0) -> int:
    """SIGKILL every process left in group ``pgid``; wait until they are gone.

    Call it as soon as the group's leader is seen dead: a group id is not
    given to a new process while any member is alive, so the signal reaches
    only what the leader started. Returns how many live processes were still
    there (0 when the leader's children had stopped cleanly). Waits at most
    ``timeout`` s until they are reaped too: a program restarted on the same
    data may check that its predecessor's PID is gone (PostgreSQL's lock
    files do), and an orphan's zombie lasts until init reaps it.
    """
    survivors = _members(pgid, zombies=False)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return 0
    except PermissionError:  # members under another user: nothing more we can do
        return survivors
    deadline = time.monotonic() + timeout
    while _members(pgid, zombies=True) and time.monotonic() < deadline:
        time.sleep(0.01)
    return survivors


def _members(pgid: int, *, zombies: bool) -> int:
    """Processes in group ``pgid`` (zombies counted or not), from /proc."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the ")" that closes the command name: state ppid pgrp ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid and (zombies or fields[0] != b"Z"):
            count += 1
    return count
