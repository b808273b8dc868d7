"""The reference control plane as a real process: ``otgate control-plane serve``
over a directory, on an ephemeral loopback port; publish versions, read reports,
stop it and start it again on the same port."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_URL = re.compile(r"control_plane_listening url=(http://\S+?) ")


class ControlPlane:
    def __init__(self, root: Path, tokens: dict[str, str]) -> None:
        self.dir = root / "cp"
        self.dir.mkdir()
        self.tokens = tokens
        self.tokens_file = root / "cp-tokens.toml"
        self.tokens_file.write_text("".join(f'{g} = "{t}"\n' for g, t in tokens.items()))
        self.log_path = root / "cp.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, listen: str = "127.0.0.1:0", timeout: float = 20.0) -> ControlPlane:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otgate.supervisors.cli",
                "control-plane",
                "serve",
                "--dir",
                str(self.dir),
                "--listen",
                listen,
                "--tokens",
                str(self.tokens_file),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not (m := _URL.search(self.log_path.read_text(errors="replace")[offset:])):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"control plane did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        self.url = m.group(1)
        return self

    @property
    def listen(self) -> str:
        return self.url.removeprefix("http://")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self._log.close()

    def publish(self, gateway_id: str, version: int, toml: str) -> None:
        """Write ``<version>.toml`` atomically (the server may read it any moment)."""
        folder = self.dir / gateway_id
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{version}.tmp"
        tmp.write_text(toml)
        tmp.rename(folder / f"{version}.toml")

    def request(
        self, path: str, token: str, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict]:
        req = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {token}", **(headers or {})}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)

    def reports(self, gateway_id: str) -> list[dict[str, Any]]:
        status, body, _ = self.request(f"/gateways/{gateway_id}/reports", self.tokens[gateway_id])
        assert status == 200, body
        return json.loads(body)


@pytest.fixture(name="control_plane")
def control_plane_fixture(tmp_path: Path) -> Iterator[ControlPlane]:
    """A started reference control plane with one gateway token (``site-1``)."""
    cp = ControlPlane(tmp_path, {"site-1": "site-1-token", "site-2": "site-2-token"})
    cp.start()
    yield cp
    cp.stop()
