"""A private PostgreSQL server for the harness, the demo plant and tests.

Debian's ``postgresql`` binaries, one data directory, 127.0.0.1 and a port
of its own, trust auth, its Unix socket in its own directory, and
``track_commit_timestamp`` on (so a checker can tell when a row was
committed). The server runs in the foreground as a child process that dies
with its parent (PR_SET_PDEATHSIG): a killed harness or bulkhead never
leaves a database behind; the next start recovers the data directory like
after a power cut. As root the server runs as the ``postgres`` user
(PostgreSQL refuses root), which must be able to enter the data directory.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

PR_SET_PDEATHSIG = 1


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (Debian package ``postgresql``)."""


def pg_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    raise PostgresUnavailable(f"{name} not found; apt-get install -y postgresql")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # Runs in the child after the switch to the server's user: that order keeps
    # the setting (a credential change clears it).
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def reachable_workdir(link: Path) -> Path:
    """The server's working directory at ``link`` (in the demo, ``postgres`` in
    its state dir, so deleting the state dir starts afresh).

    As root the server runs as ``postgres``, which may not be able to enter
    ``link``'s folder (a clone under /root). Then the data lives in a fresh temp
    dir and ``link`` is a symlink to it: deleting the state dir still starts
    afresh (the next start makes a new temp dir). Returns the real directory."""
    home = link.parent
    home.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        if link.resolve().is_dir():
            return link.resolve()
        link.unlink()  # its temp dir was cleaned away
    if os.geteuid() != 0 or _can_enter(home, "postgres"):
        return link
    target = Path(tempfile.mkdtemp(prefix="otgate-pg-"))
    link.symlink_to(target, target_is_directory=True)
    return target


def _can_enter(path: Path, user: str) -> bool:
    """Can ``user`` reach ``path`` (search permission on it and every parent)?"""
    return subprocess.run(["test", "-x", str(path)], user=user, timeout=10).returncode == 0


class PostgresServer:
    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        # Default: a fresh dir under the system temp dir, which 'postgres' can enter.
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="otgate-pg-"))
        self.data = self.workdir / "data"
        self.port = port or free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.proc: subprocess.Popen[bytes] | None = None

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname} connect_timeout=2"

    def init(self) -> PostgresServer:
        """Create the cluster unless the data directory already holds one."""
        initdb = pg_binary("initdb")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            result = subprocess.run(
                [
                    initdb,
                    "-D",
                    str(self.data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                user=self.user,
            )
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed: {result.stderr.strip()[-500:]}")
        return self

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and return once it accepts connections."""
        (self.data / "postmaster.pid").unlink(missing_ok=True)  # left by a killed server
        with open(self.workdir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    pg_binary("postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.workdir),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "track_commit_timestamp=on",
                    "-c",
                    "max_connections=50",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self.user,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn()).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"postgres exited {self.proc.returncode}; see {self.workdir / 'server.log'}"
                    ) from None
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"postgres not accepting connections in {timeout:g}s"
                    ) from None
                time.sleep(0.1)

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """``fast`` (SIGINT: roll back and shut down) or ``immediate`` (SIGQUIT: like a crash)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)
