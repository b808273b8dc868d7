"""A session's write progress on disk: the last request it took, durably.

One small file per adapter (``<state_dir>/commands/<adapter_id>.ledger``)
with two fixed-size slots written alternately (double buffering): an entry is
``[crc32][length][msgpack]`` and carries a sequence number; reading takes the
valid slot with the higher sequence number. A write goes in place into the
slot that does not hold the newest durable entry, so a crash mid-write (even
a power cut) leaves that entry readable: the ledger never goes back past it
(the file never changes size after it is created, so ``fdatasync`` needs no
metadata flush).

An entry says: request ``request`` at ``(partition, offset)`` of
``commands.requests`` was taken; ``done`` tells whether its outcome was
logged. The runner writes ``done=False`` before the device is touched and
waits for its ``fdatasync`` (at most once). ``done=True`` goes to the page
cache only (a plain ``pwrite``, cheap enough for the event loop): it survives
a ``kill -9``; a power cut may lose it, and then the restart reports the
request TIMED_OUT after its real result (readers take a request's first final
result), never runs it again. Since the next ``done=False`` entry overwrites
the unsynced one, not the durable one before it, a lost or torn "done" never
uncovers an older entry.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import msgspec

from otgate.actors.records import CommandRequest

SLOT = 16384
_HEAD = struct.Struct(">II")  # crc32, length
_encode = msgspec.msgpack.Encoder().encode


class Entry(msgspec.Struct, frozen=True):
    seq: int
    partition: int
    offset: int
    request: CommandRequest
    done: bool


class Ledger:
    """The two-slot progress file of one session (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.last: Entry | None = None
        self._durable_slot = 1  # the slot of the newest durable entry (the next goes to the other)
        self._unsynced = False

    def open(self) -> Entry | None:
        """Open (creating it durably when missing); the newest valid entry, if any."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if created or os.fstat(self.fd).st_size < 2 * SLOT:
            os.ftruncate(self.fd, 2 * SLOT)
            os.fsync(self.fd)
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        else:
            os.fdatasync(self.fd)  # what we read may sit in the page cache only: make it durable
        slots = [(e, i) for i in (0, 1) if (e := self._read(i)) is not None]
        self.last = None
        if slots:
            self.last, self._durable_slot = max(slots, key=lambda s: s[0].seq)
        return self.last

    def _read(self, slot: int) -> Entry | None:
        assert self.fd is not None
        data = os.pread(self.fd, SLOT, slot * SLOT)
        crc, length = _HEAD.unpack_from(data)
        body = data[_HEAD.size : _HEAD.size + length]
        if length == 0 or length > SLOT - _HEAD.size or zlib.crc32(body) != crc:
            return None  # never written, or torn by a crash before its fdatasync
        try:
            return msgspec.msgpack.decode(body, type=Entry)
        except msgspec.DecodeError:
            return None

    def write(self, partition: int, offset: int, request: CommandRequest, *, done: bool) -> None:
        """Record progress; durably (``fdatasync``, blocking) unless ``done``."""
        assert self.fd is not None
        seq = self.last.seq + 1 if self.last else 1
        entry = Entry(seq, partition, offset, request, done)
        body = _encode(entry)
        if len(body) > SLOT - _HEAD.size:
            raise ValueError(f"request too large for the ledger ({len(body)} bytes)")
        slot = 1 - self._durable_slot
        os.pwrite(self.fd, _HEAD.pack(zlib.crc32(body), len(body)) + body, slot * SLOT)
        self.last = entry
        if done:
            self._unsynced = True
        else:
            os.fdatasync(self.fd)
            self._durable_slot, self._unsynced = slot, False

    def close(self) -> None:
        if self.fd is not None:
            if self._unsynced:
                os.fdatasync(self.fd)
            os.close(self.fd)
            self.fd = None
