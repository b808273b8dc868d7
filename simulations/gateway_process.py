"""A real ``otgate run`` as a child process: start it, find its status
endpoint, call it, kill or stop it. Used by the harness, the benchmarks and
the tests (the same code path an operator's `otgate run` takes)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

_URL = re.compile(r"status_listening url=(http://\S+?)\"")


class GatewayProcess:
    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.starts = 0
        self.log_path = config.with_suffix(".log")

    def start(self, *extra: str, timeout: float = 60.0) -> GatewayProcess:
        """Start ``otgate run`` on an ephemeral status port; return once it listens."""
        self.log_path = self.config.with_suffix(f".{self.starts}.log" if self.starts else ".log")
        self.starts += 1
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
        deadline = time.monotonic() + timeout
        while not (m := _URL.search(self.log())):
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway not listening after {timeout:g}s")
            time.sleep(0.05)
        self.url = m.group(1)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            req = urllib.request.Request(self.url + path, headers=headers)
            with urllib.request.urlopen(req, timeout=5) as resp:
                body, status = resp.read(), resp.status
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

    def ready(self) -> bool:
        try:
            return self.get("/health/ready")[0] == 200
        except (urllib.error.URLError, OSError):
            return False

    def component(self, cid: str) -> dict[str, Any]:
        return next(c for c in self.health()["components"] if c["id"] == cid)

    def descendants(self) -> list[psutil.Process]:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).children(recursive=True)

    def kill(self) -> None:
        """SIGKILL, as a power cut would."""
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
        self._log.close()
        return rc
