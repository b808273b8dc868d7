"""A null-modem cable made of two pseudo-terminal pairs, relayed in-process.

Each side (server, client) opens the slave end of its own pty as a serial
port; the relay copies bytes between the two master ends. Doing it in-process
(instead of ``socat``) needs no extra binary and gives one place to inject
wire faults: ``corrupt()`` is asked once per server→client chunk and, when
True, the chunk's last byte (the RTU CRC) is flipped so the client drops the
frame. Both slave fds stay open in the relay so a side that closes and
reopens its port does not make the masters fail with EIO. ``link`` names a
stable symlink to the client side (removed on close).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable


class PtyRelay:
    """Two pty pairs joined back to back; ``server_path`` ↔ ``client_path``."""

    def __init__(self, corrupt: Callable[[], bool] | None = None, link: str = "") -> None:
        self.corrupt = corrupt
        self.link = link
        self._fds: list[int] = []
        self.server_path = ""
        self.client_path = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bytes_relayed = 0
        self.bytes_dropped = 0

    async def start(self) -> None:
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        for fd in (s1, s2):
            tty.setraw(fd)
        for fd in (m1, m2):
            os.set_blocking(fd, False)
        self._fds = [m1, s1, m2, s2]
        self.server_path, self.client_path = os.ttyname(s1), os.ttyname(s2)
        if self.link:
            self.client_path = self._make_link(self.client_path)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(m1, self._pump, m1, m2, True)
        self._loop.add_reader(m2, self._pump, m2, m1, False)

    def _make_link(self, target: str) -> str:
        """Point ``link`` at ``target`` atomically; never clobber a regular file."""
        if os.path.lexists(self.link) and not os.path.islink(self.link):
            raise FileExistsError(f"{self.link} exists and is not a symlink")
        tmp = f"{self.link}.{os.getpid()}.tmp"
        os.symlink(target, tmp)
        os.replace(tmp, self.link)
        return self.link

    def _pump(self, src: int, dst: int, from_server: bool) -> None:
        try:
            data = os.read(src, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while a side is closed; the slave fds we hold keep it transient
        if not data:
            return
        if from_server and self.corrupt is not None and self.corrupt():
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        self.bytes_relayed += len(data)
        view = memoryview(data)
        while view:
            try:
                n = os.write(dst, view)
            except BlockingIOError:
                # nobody is reading the other end and its buffer is full: drop the
                # rest, as a serial line drops bytes nobody listens to (never spin
                # inside the event loop)
                self.bytes_dropped += len(view)
                return
            except OSError:
                return
            view = view[n:]

    def close(self) -> None:
        if self._loop is not None:
            for fd in (self._fds[0], self._fds[2]):
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(fd)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        if self.link and os.path.islink(self.link):
            with contextlib.suppress(OSError):
                os.unlink(self.link)
