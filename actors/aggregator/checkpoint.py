"""The aggregator's checkpoint file: emitted-window marks, persisted windows, positions.

Format: msgpack ``{"version": 2, "marks": [[asset, parameter, resolution,
window_start], ...], "windows": Windows.export_state(), "positions":
[[topic, partition, next_offset], ...]}``, written to a temporary file,
fsync'd and renamed over the old one (``statefile.write_atomic_parts``), so
a crash leaves either the old or the new file. A missing file is an empty
checkpoint; an unreadable one raises (never silently reset: that could emit
windows twice).

The body is encoded and written one window at a time (``save_windows``: in the
worker thread that writes the file, straight from the live windows, which
only the aggregator's task changes and which it leaves alone until the save
returns). So the GIL is free between windows and the bulkhead's event loop
keeps running (one ``msgspec`` call over a 65 MB state held it ~0.4 s of CPU,
several seconds on a loaded machine, and the bulkhead missed its heartbeats),
and no encoded copy of the whole state is ever in memory.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from otgate.actors.aggregator.windows import StreamKey, TopicPartition, Window, window_state
from otgate.actors.statefile import write_atomic_parts

VERSION = 2


class Checkpoint(msgspec.Struct):
    version: int = VERSION
    marks: list[tuple[str, str, str, int]] = []
    windows: list[list[Any]] = []
    positions: list[tuple[str, int, int]] = []

    def high_water(self) -> dict[StreamKey, int]:
        return {(a, p, r): s for a, p, r, s in self.marks}

    def position_map(self) -> dict[TopicPartition, int]:
        return {(t, p): o for t, p, o in self.positions}


class CheckpointError(Exception):
    """The checkpoint file exists but cannot be read."""


def load(path: Path) -> Checkpoint:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Checkpoint()
    try:
        return msgspec.msgpack.decode(data, type=Checkpoint)
    except msgspec.DecodeError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def save(
    path: Path,
    marks: dict[StreamKey, int],
    windows: Collection[list[Any]] = (),
    positions: dict[TopicPartition, int] | None = None,
) -> int:
    """Write atomically (``windows``: ``export_state`` lists, e.g. restored ones);
    returns the file size in bytes."""
    return write_atomic_parts(path, _parts(marks, len(windows), windows, positions or {}))


def save_windows(
    path: Path,
    marks: dict[StreamKey, int],
    windows: Collection[Window],
    positions: dict[TopicPartition, int],
) -> int:
    """``save`` of live windows, each turned into its state as it is written.
    Nothing may change ``windows`` or ``marks`` until it returns."""
    states = (window_state(w) for w in windows)
    return write_atomic_parts(path, _parts(marks, len(windows), states, positions))


def _parts(
    marks: dict[StreamKey, int],
    count: int,
    windows: Iterable[list[Any]],
    positions: dict[TopicPartition, int],
) -> Iterator[bytes]:
    """The msgpack of ``Checkpoint`` in pieces: the same bytes as encoding it whole.

    Yields one buffer again and again (each piece must be used before the next)."""
    enc = msgspec.msgpack.Encoder()
    yield b"\x84" + enc.encode("version") + enc.encode(VERSION) + enc.encode("marks")
    yield enc.encode([(a, p, r, s) for (a, p, r), s in marks.items()])
    yield enc.encode("windows") + _array_header(count)
    buf = bytearray()
    for state in windows:
        enc.encode_into(state, buf)
        yield buf
    yield enc.encode("positions") + enc.encode([(t, p, o) for (t, p), o in positions.items()])


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")
