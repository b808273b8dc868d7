"""The demo keeps its state (log and historian) in the clone's own state dir:
deleting that dir starts afresh, and no other clone or run shares it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import psycopg
import pytest

from otgate.actors.context import BuildContext
from otgate.config.load import load_config
from otgate.simulations.parts import PostgresDemoConfig, PostgresDemoServer
from otgate.simulations.postgres_server import free_port, pg_binary, reachable_workdir

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "examples" / "gateway.toml"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user can enter (as a clone under /home or /srv would be)."""
    d = Path(tempfile.mkdtemp(prefix="otgate-test-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_the_example_keeps_its_state_next_to_itself() -> None:
    cfg = load_config(EXAMPLE, env={}).config
    assert Path(cfg.gateway.state_dir) == EXAMPLE.parent / "state"
    pg = next(s for s in cfg.simulators if isinstance(s, PostgresDemoServer))
    assert pg.server.data_dir == ""  # = <state dir>/postgres


def test_a_reachable_state_dir_holds_the_data_itself(open_dir: Path) -> None:
    want = open_dir / "state" / "postgres"
    assert reachable_workdir(want) == want
    assert not want.is_symlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_an_unreachable_state_dir_links_to_a_fresh_temp_dir(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)  # 'postgres' cannot enter it, like /root
    state = tmp_path / "state"
    first = reachable_workdir(state / "postgres")
    try:
        assert (state / "postgres").is_symlink() and first != state / "postgres"
        assert reachable_workdir(state / "postgres") == first  # the next run finds its data
        shutil.rmtree(state)  # "start fresh"
        second = reachable_workdir(state / "postgres")
        assert second != first
    finally:
        for d in (first, (state / "postgres").resolve()):
            shutil.rmtree(d, ignore_errors=True)


def test_the_demo_postgres_keeps_its_data_in_the_state_dir(open_dir: Path) -> None:
    try:
        pg_binary("initdb")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    state = open_dir / "state"
    port = free_port()
    part = PostgresDemoServer(id="pg", server=PostgresDemoConfig(port=port))

    async def nowhere(readings) -> None:
        raise AssertionError("nothing to publish")

    actor = part.build(BuildContext(gateway_id="t", publish=nowhere, state_dir=state))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(actor.run)
            with anyio.fail_after(90):
                while not actor.endpoint:
                    await anyio.sleep(0.1)
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert (state / "postgres" / "data" / "PG_VERSION").exists()
    with pytest.raises(psycopg.OperationalError):  # stopped with its actor
        psycopg.connect(f"host=127.0.0.1 port={port} user=postgres connect_timeout=2").close()


def test_the_demo_script_readme_and_example_query_the_same_table() -> None:
    root = EXAMPLE.parent.parent.parent
    script = (root / "simulations" / "run-demo.sh").read_text()
    query = next(line.strip() for line in script.splitlines() if line.strip().startswith("psql"))
    assert "otgate_readings" in query
    assert query in (root / "README.md").read_text()
    assert query in EXAMPLE.read_text()
