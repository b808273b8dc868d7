"""alocals3 (PyPI, an S3 server on disk) as durable storage for tansu.

``start_alocals3(dir)`` (shared with the harness, in
``otgate.simulations.kafka_broker``) runs ``alocals3-server`` on an ephemeral
loopback port with its SQLite metadata and objects under ``dir`` and creates
the ``tansu`` bucket; ``tansu_env(s3)`` is the environment tansu needs for
``--storage-engine s3://tansu/``. Stop by PID (``stop()``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from otgate.simulations.kafka_broker import S3, start_alocals3, tansu_env

__all__ = ["S3", "alocals3", "start_alocals3", "tansu_env"]


@pytest.fixture
def alocals3(tmp_path: Path) -> Iterator[S3]:
    s3 = start_alocals3(tmp_path / "s3")
    try:
        yield s3
    finally:
        s3.stop()
