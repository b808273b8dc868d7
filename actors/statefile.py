"""Small state files a stage keeps beside the log (checkpoints): written atomically.

The body goes to a temporary file, is fsync'd and renamed over the old file,
then the directory is fsync'd: a crash leaves either the old or the new file,
never half of one.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, body: bytes) -> int:
    """Replace ``path`` with ``body`` durably; returns the size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
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
    return len(body)
