"""A real ``otgate run`` process for tests: start it, talk to its status
endpoint, stop it, and see which processes it left."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from otgate.simulations.gateway_process import GatewayProcess


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(name="gateway")
def gateway_fixture(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Factory: ``gateway(toml_text, env=None)`` starts ``otgate run`` on it."""
    started: list[GatewayProcess] = []

    def start(
        toml: str, env: dict[str, str] | None = None, name: str = "gateway"
    ) -> GatewayProcess:
        path = tmp_path / f"{name}.toml"
        path.write_text(toml)
        gw = GatewayProcess(path, {**os.environ, **(env or {})})
        started.append(gw)
        return gw.start()

    yield start
    for gw in started:
        leftovers = gw.descendants() if gw.proc and gw.proc.poll() is None else []
        gw.stop()
        for p in leftovers:  # only what this test started
            try:
                p.kill()
            except psutil.Error:
                pass


def synthetic(adapter_id: str, asset: str, interval: float = 0.05) -> str:
    return f"""
[[adapters]]
type = "synthetic"
id = "{adapter_id}"
asset_id = "{asset}"
interval = {interval}
points = [{{ parameter = "flow", unit = "m3/h", signal = {{ kind = "sine", amplitude = 5.0, offset = 20.0 }} }}]
"""
