"""systemd's side of sd_notify for tests: a bound unix datagram socket.

Usage: ``from peers.notify_socket import notify_socket_fixture  # noqa: F401``
registers the ``notify_socket`` fixture: a ``NotifySocket`` bound to a path in a
short temp dir (``abstract_notify_socket_fixture`` → ``abstract_notify_socket``
binds an abstract ``@name``). Pass ``.env`` (``{"NOTIFY_SOCKET": ...}``) to the
process under test -- e.g. ``otgate run`` started with
``env={**os.environ, **sock.env, "WATCHDOG_USEC": "2000000"}`` -- then
``await sock.wait_for("READY=1")``. Each datagram is recorded with the
sender's pid from SCM_CREDENTIALS, which is what PID 1 checks for
``NotifyAccess=main``.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import pytest


@dataclass(frozen=True)
class Notification:
    """One datagram: its ``KEY=VALUE`` lines as a dict, and the sender's pid."""

    fields: dict[str, str]
    pid: int
    raw: str


class NotifySocket:
    """A NOTIFY_SOCKET receiver; every datagram read is kept in ``received``."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value
        self.env = {"NOTIFY_SOCKET": env_value}
        self.received: list[Notification] = []
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.setblocking(False)

    def _receive(self) -> Notification:
        data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = -1
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = struct.unpack("iII", payload[:12])
        raw = data.decode("utf-8", "replace")
        fields = dict(line.partition("=")[::2] for line in raw.split("\n") if line)
        note = Notification(fields, pid, raw)
        self.received.append(note)
        return note

    def drain(self) -> list[Notification]:
        """Read every datagram already queued, without waiting; return them."""
        new = []
        while True:
            try:
                new.append(self._receive())
            except BlockingIOError:
                return new

    async def wait_for(self, state: str, timeout: float = 10.0) -> Notification:
        """The next datagram containing the line ``state`` (e.g. ``"READY=1"``).

        Datagrams read while waiting stay in ``received``. Raises TimeoutError.
        """
        key, _, value = state.partition("=")
        with anyio.fail_after(timeout):
            while True:
                for note in self.drain():
                    if note.fields.get(key) == value:
                        return note
                await anyio.wait_readable(self.sock)

    def recv_blocking(self, timeout: float = 5.0) -> Notification:
        """One datagram, for synchronous tests; raises TimeoutError."""
        self.sock.settimeout(timeout)
        try:
            return self._receive()
        finally:
            self.sock.setblocking(False)


@pytest.fixture(name="notify_socket")
def notify_socket_fixture() -> Iterator[NotifySocket]:
    # A short directory: sun_path holds 108 bytes, pytest's tmp_path can be longer.
    directory = tempfile.mkdtemp(prefix="otg-notify-", dir="/tmp")
    path = os.path.join(directory, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        yield NotifySocket(sock, path)
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(name="abstract_notify_socket")
def abstract_notify_socket_fixture() -> Iterator[NotifySocket]:
    name = f"otgate-test-{os.getpid()}-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(b"\0" + name.encode())
        yield NotifySocket(sock, "@" + name)
    finally:
        sock.close()
