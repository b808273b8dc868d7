"""Programs a bulkhead starts (mosquitto, postgres and its backends) die with
the bulkhead whatever killed it, and the restarted bulkhead comes back
RUNNING on the same ports."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from peers.demo import scratch_fixture  # noqa: F401
from peers.gateway import gateway_fixture, wait_for  # noqa: F401

from otgate.simulations.postgres_server import free_port

pytestmark = pytest.mark.skipif(
    not Path(shutil.which("mosquitto") or "/usr/sbin/mosquitto").exists(),
    reason="needs Debian's mosquitto (tests/run.sh installs it)",
)


def config(scratch: Path, mosquitto: str | None = None) -> str:
    binary = f', binary = "{mosquitto}"' if mosquitto else ""
    return f"""
[gateway]
id = "gw-orphans"
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 3.0

[[simulators]]
type = "mqtt_broker"
id = "broker"
broker = {{ port = {free_port()}{binary} }}

[[simulators]]
type = "postgres"
id = "db"
server = {{ port = {free_port()}, data_dir = "{scratch / "pg"}" }}

[[bulkheads]]
id = "devices"
members = ["broker", "db"]
"""


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def healthy(gw, old_pid: int | None = None):
    node = gw.component("devices")
    sims = [c for c in node["children"] if c["id"] in ("broker", "db")]
    ok = (
        node["state"] == "RUNNING"
        and node["pid"] not in (None, old_pid)
        and len(sims) == 2
        and all(
            c["state"] == "RUNNING" and c["restarts"] == 0 and c["metrics"].get("serving") == 1
            for c in sims
        )
    )
    return ok and node


def started(pid: int) -> dict[str, list[psutil.Process]] | None:
    """The bulkhead's external programs: mosquitto, and postgres with its backends."""
    kids = psutil.Process(pid).children(recursive=True)
    found = {
        "mosquitto": [p for p in kids if p.name() == "mosquitto"],
        "postgres": [p for p in kids if p.name() == "postgres"],
    }
    return found if all(found.values()) else None


def mosquitto_binary() -> str:
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def test_sigkilled_bulkhead_takes_what_it_started_and_comes_back_running(
    gateway, scratch: Path
) -> None:
    # A helper that forks: the wrapper gets the death signal, the mosquitto it
    # starts does not. Only the gateway's kill of the bulkhead's process group
    # frees the port for the restarted bulkhead.
    wrapper = scratch / "mosquitto-wrapper"
    wrapper.write_text(f'#!/bin/sh\n{mosquitto_binary()} "$@"\n')
    wrapper.chmod(0o755)
    gw = gateway(config(scratch, str(wrapper)))
    node = wait_for(lambda: healthy(gw), 90, "the devices bulkhead RUNNING")
    old = wait_for(lambda: started(node["pid"]), 30, "mosquitto and postgres started")
    os.kill(node["pid"], signal.SIGKILL)
    wait_for(lambda: healthy(gw, node["pid"]), 60, "the bulkhead RUNNING again, no member restarts")
    left = alive(old["mosquitto"] + old["postgres"])
    assert not left, f"outlived their bulkhead: {left}"
    # What the group kill found alive depends on timing: at least the mosquitto.
    assert re.search(r"bulkhead_group_killed bulkhead=devices processes=[1-9]", gw.log())


def test_gateway_sigkill_takes_the_programs_too(gateway, scratch: Path) -> None:
    gw = gateway(config(scratch))
    node = wait_for(lambda: healthy(gw), 90, "the devices bulkhead RUNNING")
    old = wait_for(lambda: started(node["pid"]), 30, "mosquitto and postgres started")
    gw.stop(signal.SIGKILL)  # nobody is left to kill the group: the death signal must
    wait_for(
        lambda: not alive(old["mosquitto"] + old["postgres"]),
        15,
        "mosquitto and postgres to die with their bulkhead",
    )


def test_broker_dies_with_whatever_started_it(tmp_path: Path) -> None:
    """The death signal alone (no process group kill): SIGKILL the process that
    runs ``run_mqtt_broker`` and its mosquitto goes too."""
    script = tmp_path / "broker.py"
    script.write_text(
        "import anyio\n"
        "from otgate.simulations.mqtt_sim import MqttBrokerConfig, run_mqtt_broker\n"
        "async def main():\n"
        "    async with anyio.create_task_group() as tg:\n"
        "        print(await tg.start(run_mqtt_broker, MqttBrokerConfig()), flush=True)\n"
        "anyio.run(main)\n"
    )
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip().isdigit()
        broker = [p for p in psutil.Process(owner.pid).children() if p.name() == "mosquitto"]
        assert broker, "no mosquitto under its owner"
    finally:
        owner.kill()
        owner.wait(10)
    wait_for(lambda: not alive(broker), 10, "mosquitto to die with its owner")
