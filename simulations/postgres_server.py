"""A private PostgreSQL cluster (initdb + pg_ctl) for the harness and demos.

Runs on 127.0.0.1 and an ephemeral port, trust auth, with its Unix socket
in its own directory. As root it runs the server as the ``postgres`` user
(PostgreSQL refuses root). ``track_commit_timestamp`` is on, so a checker
can tell when each row was committed.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


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


class PostgresServer:
    def __init__(self, port: int | None = None) -> None:
        # A fresh temp dir of its own: as root the server runs as 'postgres',
        # which must be able to enter every directory above its data.
        self.workdir = Path(tempfile.mkdtemp(prefix="otgate-pg-"))
        self.data = self.workdir / "data"
        self.port = port or free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            pwd.getpwnam("postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
            os.chmod(self.workdir, 0o777)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname} connect_timeout=2"

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {result.stderr.strip()[-500:]}")

    def init(self) -> PostgresServer:
        self._run(
            pg_binary("initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        return self

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 "
            "-c track_commit_timestamp=on -c max_connections=50"
        )
        self._run(
            pg_binary("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.workdir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(pg_binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def cleanup(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)


def _die_with_parent() -> None:
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class DemoPostgres:
    """A PostgreSQL server in the foreground, tied to the process that started it.

    For demos: the server is a child process that dies with its parent
    (PR_SET_PDEATHSIG), so a killed bulkhead never leaves a database behind;
    the next start recovers the data directory like after a power cut.
    """

    def __init__(self, data_dir: Path, port: int) -> None:
        self.workdir = data_dir
        self.data = data_dir / "data"
        self.port = port
        self.user = "postgres" if os.geteuid() == 0 else None
        self.proc: subprocess.Popen[bytes] | None = None

    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres connect_timeout=2"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            cmd = [
                pg_binary("initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]
            subprocess.run(cmd, check=True, capture_output=True, timeout=120, user=self.user)
        (self.data / "postmaster.pid").unlink(missing_ok=True)  # left by a killed server
        log = open(self.workdir / "server.log", "ab")
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
            preexec_fn=_die_with_parent,  # after the switch to `user`: it survives exec
        )
        log.close()

    def stop(self, timeout: float = 10.0) -> None:
        import signal

        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # fast shutdown
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
