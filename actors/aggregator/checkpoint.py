"""The persisted high-water marks of emitted windows (one small file per aggregator).

File format: msgspec JSON ``{"version": 1, "marks": [[asset, parameter,
resolution, window_start], ...]}``, written to a temporary file, fsync'd and
renamed over the old one, so a crash leaves either the old or the new file.
A missing file is an empty map; an unreadable one raises (never silently
reset: that could emit windows twice).
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
from otgate.actors.aggregator.windows import StreamKey


class _File(msgspec.Struct):
    version: int
    marks: list[tuple[str, str, str, int]]


class CheckpointError(Exception):
    """The high-water file exists but cannot be read."""


def load(path: Path) -> dict[StreamKey, int]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        f = msgspec.json.decode(data, type=_File)
    except msgspec.DecodeError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return {(a, p, r): s for a, p, r, s in f.marks}


def save(path: Path, marks: dict[StreamKey, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    body = msgspec.json.encode(
        _File(version=1, marks=[(a, p, r, s) for (a, p, r), s in marks.items()])
    )
    with open(tmp, "wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
