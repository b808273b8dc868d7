"""A real ``otgate run`` process for tests: start it, talk to its status
endpoint, stop it, and see which processes it left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

_URL = re.compile(r"status_listening url=(http://\S+?)\"")


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


class GatewayProcess:
    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = config.with_suffix(".log")
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, *extra: str) -> GatewayProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otgate.supervisors.cli",
                "run",
                "--config",
                str(self.config),
                "--status-listen",
                "127.0.0.1:0",
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        self.url = wait_for(self._find_url, 30, "the status endpoint to listen")
        return self

    def _find_url(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"gateway exited {self.proc.returncode}:\n{self.log()}")
        m = _URL.search(self.log())
        return m.group(1) if m else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode()

    def post(
        self, path: str, body: dict | None = None, token: str | None = None
    ) -> tuple[int, Any]:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body or {}).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {token}"} if token else {}),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def health(self) -> dict[str, Any]:
        return self.get("/health")[1]

    def component(self, cid: str) -> dict[str, Any]:
        return next(c for c in self.health()["components"] if c["id"] == cid)

    def descendants(self) -> list[psutil.Process]:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self._log.close()
        return rc


@pytest.fixture(name="gateway")
def gateway_fixture(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Factory: ``gateway(toml_text, env=None)`` starts ``otgate run`` on it."""
    started: list[GatewayProcess] = []

    def start(
        toml: str, env: dict[str, str] | None = None, name: str = "gateway"
    ) -> GatewayProcess:
        path = tmp_path / f"{name}.toml"
        path.write_text(toml)
        gw = GatewayProcess(path, env)
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
