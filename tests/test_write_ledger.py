"""The command ledger across crashes, power cuts included: a simulated disk
keeps only what ``fdatasync`` made durable, plus any unsynced write torn at any
point; the ledger read back must never be older than the last request taken."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from otgate.actors.records import CommandRequest
from otgate.protocols import command_ledger
from otgate.protocols.command_ledger import SLOT, Ledger


def _request(i: int) -> CommandRequest:
    return CommandRequest(
        request_id=f"r{i}", adapter_id="plc1", asset_id="press", parameter="sp", value=i,
        deadline=0, by="test", role="engineer", gateway_time=0,
    )


class Disk:
    """What a power cut leaves: the file as of the last fdatasync, and the writes since."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
        self.path = path
        self.durable = b"\0" * (2 * SLOT)
        self.pending: list[tuple[int, bytes]] = []
        real_sync, real_pwrite = os.fdatasync, os.pwrite

        def fdatasync(fd: int) -> None:
            real_sync(fd)
            self.durable = path.read_bytes()
            self.pending = []

        def pwrite(fd: int, data: bytes, offset: int) -> int:
            self.pending.append((offset, data))
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(command_ledger.os, "fdatasync", fdatasync)
        monkeypatch.setattr(command_ledger.os, "pwrite", pwrite)

    def images(self) -> list[bytes]:
        """Every state a power cut now may leave: each unsynced write lost, torn or whole."""
        out = [self.durable]
        for cut in (0.25, 0.5, 1.0):
            img = bytearray(self.durable)
            for offset, data in self.pending:
                part = data[: max(1, int(len(data) * cut))]
                img[offset : offset + len(part)] = part
                out.append(bytes(img))
        return out


def _reopen(image: bytes, path: Path) -> command_ledger.Entry | None:
    copy = path.with_name("after-crash.ledger")
    copy.write_bytes(image)
    ledger = Ledger(copy)
    try:
        return ledger.open()
    finally:
        ledger.close()


def test_a_power_cut_never_takes_the_ledger_back_past_a_taken_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "plc1.ledger"
    ledger = Ledger(path)
    ledger.open()
    disk = Disk(monkeypatch, path)
    taken = -1  # offset of the newest request durably taken (it may have reached the device)
    for offset in range(8):
        ledger.write(0, offset, _request(offset), done=False)
        taken = offset
        ledger.write(0, offset, _request(offset), done=True)
        if offset % 3 == 2:  # a refused request: "done" without a "taken" before it
            ledger.write(0, offset + 100, _request(offset + 100), done=True)
        for image in disk.images():
            entry = _reopen(image, path)
            assert entry is not None and entry.offset >= taken, (offset, entry)
    ledger.close()


def test_done_entries_survive_a_process_kill_without_fsync(tmp_path: Path) -> None:
    """A kill -9 keeps the page cache: the "done" entry is there after a reopen,
    and the entries after it go on without taking the ledger back."""
    path = tmp_path / "plc1.ledger"
    ledger = Ledger(path)
    ledger.open()
    ledger.write(0, 5, _request(5), done=False)
    ledger.write(0, 5, _request(5), done=True)
    os.close(ledger.fd)  # no close(): no final fdatasync, like a killed process
    again = Ledger(path)
    last = again.open()
    assert last is not None and (last.offset, last.done) == (5, True)
    again.write(0, 6, _request(6), done=False)
    again.close()
    third = Ledger(path)
    last = third.open()
    third.close()
    assert last is not None and (last.offset, last.done) == (6, False)
