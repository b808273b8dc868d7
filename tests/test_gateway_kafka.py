"""The whole gateway on the Kafka backend (tansu): sessions publish to the
broker, the validator consumes with its own group and writes telemetry.clean."""

from __future__ import annotations

import json
import subprocess
import sys

from peers.gateway import gateway_fixture, synthetic, wait_for  # noqa: F401
from peers.tansu import tansu_fixture  # noqa: F401


def clean_adapters(config) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "otgate.supervisors.cli", "log", "read", "telemetry.clean",
         "--config", str(config), "--limit", "200", "--json"],
        capture_output=True, text=True, timeout=60,
    )
    return {json.loads(x)["adapter_id"] for x in out.stdout.splitlines() if x.strip()}


def test_pipeline_runs_on_the_kafka_backend(gateway, tansu) -> None:
    toml = f"""
[gateway]
id = "kafka-gw"
[log]
backend = "kafka"
bootstrap_servers = ["{tansu.bootstrap}"]
idempotence = false  # tansu 0.6 cannot InitProducerId v1+
[processing.validator]
[processing.aggregator]
enabled = false
""" + synthetic("a", "pump-1", 0.1) + synthetic("b", "pump-2", 0.1)
    gw = gateway(toml)
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, "ready")
    assert "log" not in {c["id"] for c in gw.health()["components"]}  # broker does retention
    wait_for(lambda: clean_adapters(gw.config) >= {"a", "b"}, 60, "validated readings on Kafka")
    assert gw.stop() == 0
