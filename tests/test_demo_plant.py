"""The shipped example starts as is: its simulated plant flows from all three
protocols into telemetry.raw, through the validator into telemetry.clean, and
into the demo's PostgreSQL."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from peers.gateway import GatewayProcess, wait_for

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "examples" / "gateway.toml"


def adapters_in(config: Path, topic: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "otgate.supervisors.cli", "log", "read", topic,
         "--config", str(config), "--limit", "5000", "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return {json.loads(line)["adapter_id"] for line in out.stdout.splitlines() if line.strip()}


def in_historian() -> set[str]:
    import psycopg

    try:
        with psycopg.connect("host=127.0.0.1 port=15432 user=postgres dbname=postgres") as conn:
            rows = conn.execute("SELECT DISTINCT adapter_id FROM otgate_readings").fetchall()
    except psycopg.Error:
        return set()
    return {r[0] for r in rows}


def test_example_config_runs_the_demo_plant(tmp_path: Path) -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        raise AssertionError("the demo plant needs Debian's mosquitto (tests/run.sh installs it)")
    config = tmp_path / "gateway.toml"
    shutil.copy(EXAMPLE, config)
    gw = GatewayProcess(config).start()
    try:
        wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, "the demo plant ready")
        want = {"plc-1", "line1-opcua", "site-mqtt"}
        wait_for(lambda: want <= adapters_in(config, "telemetry.raw"), 60, "all three protocols")
        wait_for(lambda: want <= adapters_in(config, "telemetry.clean"), 60, "validated readings")
        wait_for(lambda: want <= in_historian(), 60, "readings in the demo's PostgreSQL")
        assert gw.health()["status"] in ("HEALTHY", "DEGRADED")
    finally:
        assert gw.stop() == 0
        # As root the historian's data sits in a temp dir the state dir links to.
        shutil.rmtree((tmp_path / "state" / "postgres").resolve(), ignore_errors=True)
