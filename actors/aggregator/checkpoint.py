"""The aggregator's checkpoint file: emitted-window marks, persisted windows, positions.

Format: msgpack ``{"version": 2, "marks": [[asset, parameter, resolution,
window_start], ...], "windows": Windows.export_state(), "positions":
[[topic, partition, next_offset], ...]}``, written to a temporary file,
fsync'd and renamed over the old one (``statefile.write_atomic``), so a
crash leaves either the old or the new file. A missing file is an empty
checkpoint; an unreadable one raises (never silently reset: that could emit
windows twice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from otgate.actors.aggregator.windows import StreamKey, TopicPartition
from otgate.actors.statefile import write_atomic


class Checkpoint(msgspec.Struct):
    version: int = 2
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
    windows: list[list[Any]] | None = None,
    positions: dict[TopicPartition, int] | None = None,
) -> int:
    """Write atomically; returns the file size in bytes."""
    body = msgspec.msgpack.encode(
        Checkpoint(
            marks=[(a, p, r, s) for (a, p, r), s in marks.items()],
            windows=windows or [],
            positions=[(t, p, o) for (t, p), o in (positions or {}).items()],
        )
    )
    return write_atomic(path, body)
