"""PostgreSQL as a real peer for tests: the machine's server or a private cluster.

``pg_server`` (session): 127.0.0.1:5432 when it answers (trust auth) and
``OTGATE_TEST_PG_PRIVATE`` is not set, else a private cluster (``initdb`` + ``pg_ctl``) in a temp dir on an ephemeral
loopback port, stopped at the end. ``pg_dsn`` (session): a uniquely named
database on that server, dropped at the end of the session.

``PostgresServer`` (otgate.simulations.postgres_server) is the private cluster itself, usable directly by tests that
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
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from otgate.simulations.postgres_server import PostgresServer, PostgresUnavailable

SHARED = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=2"


def private_cluster() -> PostgresServer:
    """An initialised private cluster (skips the test when PostgreSQL is not installed)."""
    try:
        return PostgresServer().init()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


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
    cluster = private_cluster()
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
def pg_cluster_fixture() -> Iterator[PostgresServer]:
    """A private, started cluster the test may stop and start (outages).

    Its directory is made under the system temp dir, not pytest's private one,
    which the ``postgres`` user could not enter when the tests run as root.
    """
    cluster = private_cluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.cleanup()
