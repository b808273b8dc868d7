"""alocals3 (PyPI, an S3 server on disk) as durable storage for tansu.

``start_alocals3(dir)`` runs ``alocals3-server`` on an ephemeral loopback port
with its SQLite metadata and objects under ``dir`` and creates the ``tansu``
bucket; ``tansu_env(s3)`` is the environment tansu needs for
``--storage-engine s3://tansu/``. Stop by PID (``stop()``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from peers.tansu import free_port, wait_port


@dataclass
class S3:
    port: int
    proc: subprocess.Popen
    root: Path
    bucket: str = "tansu"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/s3"

    def restart(self) -> None:
        """Start again on the same port and files (after stop)."""
        self.proc = start_alocals3(self.root, bucket=self.bucket, port=self.port).proc

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def server_binary() -> str:
    found = shutil.which("alocals3-server") or str(Path(sys.executable).parent / "alocals3-server")
    return found


def start_alocals3(root: Path, bucket: str = "tansu", port: int | None = None) -> S3:
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = open(root / "alocals3.log", "ab")
    proc = subprocess.Popen(
        [
            server_binary(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database-url",
            f"sqlite:///{root / 'alocals3.db'}",
            "--storage-root",
            str(root / "data"),
            "--log-level",
            "WARNING",
        ],
        stdout=log,
        stderr=log,
        cwd=root,
    )
    try:
        wait_port(port, timeout=30, proc=proc)
        s3 = S3(port=port, proc=proc, root=root, bucket=bucket)
        deadline = time.monotonic() + 15
        while True:  # the port opens a moment before the app answers
            try:
                req = urllib.request.Request(f"{s3.endpoint}/{bucket}", method="PUT")
                urllib.request.urlopen(req, timeout=5).close()
                break
            except OSError as exc:
                if isinstance(exc, urllib.error.HTTPError) and exc.code == 409:
                    break  # a restart: the bucket is there
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return s3


def tansu_env(s3: S3) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT": s3.endpoint,
        "AWS_ALLOW_HTTP": "true",
    }


@pytest.fixture
def alocals3(tmp_path: Path) -> Iterator[S3]:
    s3 = start_alocals3(tmp_path / "s3")
    try:
        yield s3
    finally:
        s3.stop()
