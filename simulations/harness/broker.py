"""The Kafka backend in a scenario: a local tansu broker on durable S3
storage (alocals3) for the gateway's log, its ``[log]`` table, and the
``broker_kill`` fault (kill -9 mid-stream, restart on the same storage)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from otgate.actors.log.config import Backend, LogConfig
from otgate.simulations.harness.scenario import Fault, Scenario
from otgate.simulations.kafka_broker import DurableBroker, start_durable_broker
from otgate.simulations.report import Report


@contextlib.asynccontextmanager
async def local_broker(
    sc: Scenario, workdir: Path, report: Report
) -> AsyncIterator[DurableBroker | None]:
    """A durable broker for a ``kafka`` scenario (None for ``embedded``);
    raises ``BrokerUnavailable`` where tansu or alocals3 is not installed."""
    if sc.log_backend is not Backend.KAFKA:
        yield None
        return
    broker = await anyio.to_thread.run_sync(start_durable_broker, workdir / "broker")
    report.progress(
        f"tansu on {broker.tansu.bootstrap} (pid {broker.tansu.proc.pid}), "
        f"storage alocals3 on 127.0.0.1:{broker.s3.port} (pid {broker.s3.proc.pid})"
    )
    try:
        yield broker
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(broker.stop)


def log_config(broker: DurableBroker | None) -> LogConfig:
    """The gateway's log as the checker reads it."""
    if broker is None:
        return LogConfig()
    return LogConfig(
        backend=Backend.KAFKA, bootstrap_servers=[broker.tansu.bootstrap], idempotence=False
    )


def log_toml(broker: DurableBroker | None) -> str:
    if broker is None:
        return ""
    # tansu 0.6 refuses idempotent producers; a short request timeout lets the
    # sessions see a dead broker (and retry) within the fault.
    return f"""
[log]
backend = "kafka"
bootstrap_servers = ["{broker.tansu.bootstrap}"]
idempotence = false
request_timeout_s = 5.0
"""


async def broker_kill(fault: Fault, broker: DurableBroker | None, report: Report) -> None:
    """SIGKILL tansu mid-stream; start it again on the same port and storage
    after ``duration_s``."""
    if broker is None:
        raise RuntimeError("broker_kill: the scenario has no Kafka broker")
    await anyio.to_thread.run_sync(broker.tansu.kill)
    report.progress(f"broker killed (kill -9); restarting in {fault.duration_s:g}s")
    await anyio.sleep(fault.duration_s)
    await anyio.to_thread.run_sync(broker.tansu.restart)
    report.progress(f"broker restarted (pid {broker.tansu.proc.pid})")
