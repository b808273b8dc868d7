"""Small state files a stage keeps beside the log (checkpoints): written atomically.

The body goes to a temporary file, is fsync'd and renamed over the old file,
then the directory is fsync'd: a crash leaves either the old or the new file,
never half of one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def write_atomic(path: Path, body: bytes) -> int:
    """Replace ``path`` with ``body`` durably; returns the size in bytes."""
    return write_atomic_parts(path, (body,))


def write_atomic_parts(path: Path, parts: Iterable[bytes]) -> int:
    """Replace ``path`` with the concatenated ``parts`` durably (each part is
    written as it comes, so the whole body is never in memory at once);
    returns the size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    size = 0
    with open(tmp, "wb", buffering=1 << 20) as fh:
        for part in parts:
            fh.write(part)
            size += len(part)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return size
