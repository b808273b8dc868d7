"""systemd service notification (sd_notify) with the standard library only.

systemd passes ``NOTIFY_SOCKET`` to a ``Type=notify`` service: a filesystem path
(``/run/systemd/notify``) or an abstract socket name written ``@name``. Each
notification is one datagram of newline-separated ``KEY=VALUE`` lines
(``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=...``). When the variable
is unset (run by hand, in tests, in a container) every call is a no-op.

Semantics that matter:

* A notification is best effort: a send that fails (socket gone, queue of PID 1
  full for longer than ``SEND_TIMEOUT_S``) is logged and reported as ``False``,
  never raised, so a systemd hiccup cannot crash the gateway. A missed
  ``WATCHDOG=1`` is safe: the next ping comes one interval later, well inside
  ``WatchdogSec`` (we ping at half of it).
* ``NotifyAccess=main`` makes systemd drop notifications from any process but
  the main one. Child processes inherit ``NOTIFY_SOCKET`` and ``WATCHDOG_PID``;
  ``watchdog_interval()`` returns ``None`` in them because ``WATCHDOG_PID`` names
  the parent, so only the main process runs the watchdog loop.
* The environment is read at call time (``env`` defaults to ``os.environ``), so
  nothing is cached across a fork.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

import anyio

__all__ = [
    "SEND_TIMEOUT_S",
    "extend_timeout",
    "notify",
    "notify_socket_address",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
    "watchdog_loop",
]

log = logging.getLogger("otgate.systemd")

SEND_TIMEOUT_S = 0.5
"""Upper bound on one blocking send: PID 1 drains its queue quickly, and a
stuck send must not stall the event loop for long."""


def notify_socket_address(env: Mapping[str, str] | None = None) -> str | bytes | None:
    """The address in ``NOTIFY_SOCKET``, ready for ``sendto``; ``None`` when unset.

    ``@name`` becomes the abstract address ``b"\\0name"``; a path is returned as
    is. Other forms (``vsock:`` from newer systemd, relative paths) are not
    supported: they are logged once per call and treated as unset.
    """
    env = os.environ if env is None else env
    value = env.get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return value
    log.warning("notify_socket_unsupported address=%r", value)
    return None


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one notification datagram; ``True`` when it was sent.

    ``state`` is one or more ``KEY=VALUE`` lines separated by newlines. Returns
    ``False`` without doing anything when ``NOTIFY_SOCKET`` is unset, and
    ``False`` (with a warning log) when the send fails.
    """
    address = notify_socket_address(env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.sendto(state.encode("utf-8"), address)
    except OSError as exc:
        log.warning(
            "notify_failed state=%r error=%s",
            state.split("\n", 1)[0],
            exc.__class__.__name__,
        )
        return False
    return True


def ready(env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd the service is up (``READY=1``): ``systemctl start`` returns."""
    return notify("READY=1", env)


def reloading(env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd a reload started (``RELOADING=1``); send ``ready()`` when done.

    ``MONOTONIC_USEC`` lets newer systemd versions match the reload to the
    ``READY=1`` that ends it; older ones ignore the field.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}", env)


def stopping(env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd the service is shutting down (``STOPPING=1``)."""
    return notify("STOPPING=1", env)


def status(text: str, env: Mapping[str, str] | None = None) -> bool:
    """Set the one-line status ``systemctl status`` shows (``STATUS=...``).

    Newlines would start a new ``KEY=VALUE`` line, so they become spaces.
    """
    one_line = " ".join(text.splitlines())
    return notify(f"STATUS={one_line}", env)


def extend_timeout(seconds: float, env: Mapping[str, str] | None = None) -> bool:
    """Ask for more time for the current start-up, reload or stop (``EXTEND_TIMEOUT_USEC``).

    systemd then waits at least ``seconds`` from now before timing out; send it
    again before it runs out (e.g. while replaying a large local log at start,
    or draining sinks at stop). It does not extend ``WatchdogSec``.
    """
    return notify(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1_000_000))}", env)


def watchdog(env: Mapping[str, str] | None = None) -> bool:
    """Ping the service watchdog (``WATCHDOG=1``)."""
    return notify("WATCHDOG=1", env)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings: half of ``WATCHDOG_USEC``, or ``None``.

    ``None`` when the watchdog is not enabled for this process: ``WATCHDOG_USEC``
    unset, not a positive integer, or ``WATCHDOG_PID`` set to another process
    (a child that inherited the parent's environment).
    """
    env = os.environ if env is None else env
    raw_usec = env.get("WATCHDOG_USEC", "")
    if not raw_usec:
        return None
    raw_pid = env.get("WATCHDOG_PID", "")
    if raw_pid:
        try:
            if int(raw_pid) != os.getpid():
                return None
        except ValueError:
            log.warning("watchdog_env_invalid WATCHDOG_PID=%r", raw_pid)
            return None
    try:
        usec = int(raw_usec)
    except ValueError:
        usec = 0
    if usec <= 0:
        log.warning("watchdog_env_invalid WATCHDOG_USEC=%r", raw_usec)
        return None
    return usec / 2_000_000


async def watchdog_loop(
    is_alive: Callable[[], bool],
    *,
    interval: float | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Ping the watchdog every interval, but only while ``is_alive()`` is true.

    Returns at once when the watchdog is not enabled (``interval`` is ``None``
    and ``watchdog_interval()`` gives ``None``). Otherwise runs until cancelled:
    run it in the task group of the root supervisor. When ``is_alive()`` is
    false no ping is sent, so systemd kills and restarts the service once
    ``WatchdogSec`` passes; pings resume if it turns true again before that.
    ``is_alive`` must be cheap and must not block (it runs on the event loop).
    """
    if interval is None:
        interval = watchdog_interval(env)
    if interval is None:
        return
    withheld = False
    while True:
        if is_alive():
            if withheld:
                log.warning("watchdog_resumed")
                withheld = False
            watchdog(env)
        elif not withheld:
            log.error("watchdog_withheld reason=root_supervisor_not_alive")
            withheld = True
        await anyio.sleep(interval)
