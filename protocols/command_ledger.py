"""A session's write progress on disk: the last request it took, durably.

One small file per adapter (``<state_dir>/commands/<adapter_id>.ledger``)
with two fixed-size slots written alternately (double buffering): an entry is
``[crc32][length][msgpack]`` and carries a sequence number; reading takes the
valid slot with the higher sequence number. A write overwrites only the older
slot in place and is made durable with one ``fdatasync`` (the file never
changes size after it is created, so no metadata needs flushing), so a crash
mid-write leaves the previous entry readable: the ledger never goes backwards.

An entry says: request ``request`` at ``(partition, offset)`` of
``commands.requests`` was taken; ``done`` tells whether its outcome was
logged. The runner writes ``done=False`` before the device is touched and
``done=True`` after its result; both are durable before the next step
(each overwrites the older slot, so the newer one must be on disk first).
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
        entries = [e for e in (self._read(i) for i in (0, 1)) if e is not None]
        self.last = max(entries, key=lambda e: e.seq) if entries else None
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
        """Durably record progress in the older slot."""
        assert self.fd is not None
        seq = self.last.seq + 1 if self.last else 1
        entry = Entry(seq, partition, offset, request, done)
        body = msgspec.msgpack.encode(entry)
        if len(body) > SLOT - _HEAD.size:
            raise ValueError(f"request too large for the ledger ({len(body)} bytes)")
        os.pwrite(self.fd, _HEAD.pack(zlib.crc32(body), len(body)) + body, (seq % 2) * SLOT)
        os.fdatasync(self.fd)
        self.last = entry

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
