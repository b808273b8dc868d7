"""PostgreSQL as a real peer for tests: the machine's server or a private cluster.

``pg_server`` (session): 127.0.0.1:5432 when it answers (trust auth) and
``OTGATE_TEST_PG_PRIVATE`` is not set, else a private cluster (``initdb`` + ``pg_ctl``) in a temp dir on an ephemeral
loopback port, stopped at the end. ``pg_dsn`` (session): a uniquely named
database on that server, dropped at the end of the session.

``PgCluster`` is the private cluster itself, usable directly by tests that
must stop and start the database (an outage): ``stop()`` / ``start()`` keep
the port and the data. Run as root, the cluster's processes run as the
``postgres`` user (``runuser``), because PostgreSQL refuses to run as root.

Usage::

    from peers.postgres import (  # noqa: F401
        pg_cluster_fixture, pg_dsn_fixture, pg_server_fixture,
    )
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

SHARED = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    return None


class PgCluster:
    """A private PostgreSQL cluster on 127.0.0.1:<port>, trust auth, user ``postgres``."""

    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="otgate-pg-"))
        self.data = self.workdir / "data"
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._as: list[str] = []
        if os.geteuid() == 0:
            pwd.getpwnam("postgres")  # KeyError: no user to run the server as
            self._as = ["runuser", "-u", "postgres", "--"]
            os.chmod(self.workdir, 0o777)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user=postgres dbname={dbname} connect_timeout=2"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=60)

    def init(self) -> PgCluster:
        initdb = _bin("initdb")
        if initdb is None:
            pytest.skip("PostgreSQL binaries (initdb) not installed")
        self._run(initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8")
        return self

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c max_connections=50")
        self._run(_bin("pg_ctl") or "pg_ctl", "-D", str(self.data), "-o", opts,
                  "-l", str(self.workdir / "server.log"), "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(_bin("pg_ctl") or "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def cleanup(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)


def _shared_reachable() -> bool:
    try:
        with psycopg.connect(SHARED):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session", name="pg_server")
def pg_server_fixture() -> Iterator[str]:
    """An admin DSN (database ``postgres`` or ``test``) of a running server."""
    if not os.environ.get("OTGATE_TEST_PG_PRIVATE") and _shared_reachable():
        yield SHARED
        return
    cluster = PgCluster().init()
    cluster.start()
    try:
        yield cluster.dsn()
    finally:
        cluster.cleanup()


@pytest.fixture(scope="session", name="pg_dsn")
def pg_dsn_fixture(pg_server: str) -> Iterator[str]:
    """A fresh database for this test session, dropped afterwards."""
    name = f"otgate_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = psycopg.conninfo.conninfo_to_dict(pg_server)
    params["dbname"] = name
    try:
        yield psycopg.conninfo.make_conninfo(**params)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(name="pg_cluster")
def pg_cluster_fixture() -> Iterator[PgCluster]:
    """A private, started cluster the test may stop and start (outages).

    Its directory is made under the system temp dir, not pytest's private one,
    which the ``postgres`` user could not enter when the tests run as root.
    """
    cluster = PgCluster().init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.cleanup()
