"""The shipped demo plant (config/examples/gateway.toml) on ports of its own,
so tests can run it beside an operator's demo or another test's."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from otgate.simulations.postgres_server import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "gateway.toml"
DEMO_PORTS = ("15020", "14840", "11883", "15432", "18080", "10025")


def scratch_dir() -> Iterator[Path]:
    """A directory the ``postgres`` user can enter (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="otgate-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(name="scratch")
def scratch_fixture() -> Iterator[Path]:
    yield from scratch_dir()


def demo_config(tmp_path: Path, scratch: Path) -> Path:
    """The example config with every device/database port moved to a free one and
    the demo PostgreSQL's data directory under ``scratch``."""
    text = EXAMPLE.read_text()
    for port in DEMO_PORTS:
        assert text.count(port) >= 2, f"the demo no longer uses port {port}"
        text = text.replace(port, str(free_port()))
    # Pin the data directory where it can be removed afterwards.
    text = re.sub(
        r'(id = "sim-postgres"\nserver = \{ port = \d+)( \})',
        lambda m: f'{m[1]}, data_dir = "{scratch / "pg"}"{m[2]}',
        text,
    )
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    return config
