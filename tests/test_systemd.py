"""systemd/otgate.service: `systemd-analyze verify` passes, alone and with each drop-in.

`verify` needs `systemd-analyze` (Debian package `systemd`; it works without
systemd running). When it is missing, the session fixture installs it with
apt-get, or skips saying why.

`verify` also refuses a unit whose ExecStart binary does not exist, and a test
machine has no /usr/local/bin/otgate. So the unit is verified as a COPY whose
ExecStart points at the `otgate` console script this environment installed
(same arguments); the shipped ExecStart line itself is asserted unchanged.
Drop-ins are staged next to the copy (`otgate.service.d/`), where verify picks
them up. Warnings count as failures: verify exits 0 on "Invalid syntax,
ignoring" lines.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD_DIR / "otgate.service"
DROP_INS = sorted((SYSTEMD_DIR / "otgate.service.d").glob("*.conf"))
SHIPPED_EXEC_START = "ExecStart=/usr/local/bin/otgate run --config /etc/otgate/gateway.toml"
MAX_EXPOSURE = 2.5

# binary -> Debian package providing it
NEEDED = {"systemd-analyze": "systemd", "systemd-sysusers": "systemd", "/bin/kill": "procps"}


def _missing_packages() -> set[str]:
    return {
        package
        for binary, package in NEEDED.items()
        if not (os.access(binary, os.X_OK) if binary.startswith("/") else shutil.which(binary))
    }


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], capture_output=True, text=True, env=env, timeout=900, check=False
    )


@pytest.fixture(scope="session")
def analyze() -> str:
    """Path of systemd-analyze, installing Debian's systemd (and procps) if needed."""
    missing = _missing_packages()
    if missing:
        if not shutil.which("apt-get"):
            pytest.skip(f"needs Debian packages {sorted(missing)} and apt-get is not available")
        if os.geteuid() != 0:
            pytest.skip(f"needs Debian packages {sorted(missing)}; installing them needs root")
        update = _apt("update")
        if update.returncode != 0:
            pytest.skip(f"apt-get update failed: {update.stderr.strip()[-500:]}")
        install = _apt("install", "-y", "--no-install-recommends", *sorted(missing))
        if install.returncode != 0:
            pytest.skip(f"apt-get install {sorted(missing)} failed: {install.stderr[-500:]}")
        if _missing_packages():
            pytest.skip(f"still missing after apt-get install: {sorted(_missing_packages())}")
    path = shutil.which("systemd-analyze")
    assert path
    return path


def otgate_executable(tmp_path: Path) -> Path:
    """The console script of this environment; a stub if it is not installed."""
    for candidate in (Path(sys.executable).parent / "otgate", shutil.which("otgate")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    stub = tmp_path / "bin" / "otgate"
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return stub


def stage(tmp_path: Path, drop_ins: list[Path], extra: dict[str, str] | None = None) -> Path:
    """Copy the unit (ExecStart re-pointed) and drop-ins into a temp unit dir."""
    units = tmp_path / "units"
    (units / "otgate.service.d").mkdir(parents=True)
    text = UNIT.read_text()
    assert text.count(SHIPPED_EXEC_START + "\n") == 1
    exe = otgate_executable(tmp_path)
    text = text.replace("ExecStart=/usr/local/bin/otgate ", f"ExecStart={exe} ")
    (units / "otgate.service").write_text(text)
    needs_broker = False
    for drop_in in drop_ins:
        shutil.copy(drop_in, units / "otgate.service.d" / drop_in.name)
        needs_broker |= "Requires=redpanda.service" in drop_in.read_text()
    if needs_broker:
        # 10-kafka.conf is for machines that run Redpanda; verify refuses a
        # Requires= on a unit it cannot find, so give it one.
        (units / "redpanda.service").write_text(
            "[Unit]\nDescription=stub broker\n[Service]\nExecStart=/bin/true\n"
        )
    for name, content in (extra or {}).items():
        (units / name).write_text(content)
    return units / "otgate.service"


def verify(analyze: str, unit: Path) -> str:
    """Everything verify says; '' when the unit is clean."""
    proc = subprocess.run(
        [analyze, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=unit.parent,
        check=False,
    )
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 and not output:
        output = f"exit status {proc.returncode}"
    return output


@pytest.mark.parametrize(
    "drop_ins",
    [[], *([d] for d in DROP_INS), DROP_INS],
    ids=["unit", *(d.name for d in DROP_INS), "all-drop-ins"],
)
def test_systemd_analyze_verify(analyze: str, tmp_path: Path, drop_ins: list[Path]) -> None:
    unit = stage(tmp_path, drop_ins)
    assert verify(analyze, unit) == ""


def test_verify_check_catches_a_bad_drop_in(analyze: str, tmp_path: Path) -> None:
    """The check above can fail: verify only warns (exit 0) on a bad value."""
    unit = stage(tmp_path, [])
    (unit.parent / "otgate.service.d" / "99-bad.conf").write_text("[Service]\nType=bogus\n")
    assert "Failed to parse service type" in verify(analyze, unit)


def test_verify_check_catches_a_missing_executable(analyze: str, tmp_path: Path) -> None:
    unit = stage(tmp_path, [])
    exe = str(otgate_executable(tmp_path))
    unit.write_text(unit.read_text().replace(exe, "/nonexistent/otgate"))
    assert "/nonexistent/otgate" in verify(analyze, unit)


def test_hardening_exposure_stays_low(analyze: str, tmp_path: Path) -> None:
    unit = stage(tmp_path, [])
    proc = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=unit.parent,
        check=False,
    )
    match = re.search(r"Overall exposure level for otgate\.service: (\d+(?:\.\d+)?)", proc.stdout)
    assert match, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert float(match.group(1)) <= MAX_EXPOSURE, proc.stdout


def test_sysusers_creates_the_service_user(analyze: str, tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    assert sysusers
    (tmp_path / "root" / "etc").mkdir(parents=True)
    proc = subprocess.run(
        [
            sysusers,
            f"--root={tmp_path / 'root'}",
            "--dry-run",
            str(SYSTEMD_DIR / "sysusers.d" / "otgate.conf"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Creating user 'otgate'" in proc.stdout + proc.stderr


def unit_settings(text: str) -> dict[str, list[str]]:
    """'Section.Key' -> every value assigned, in order (continuation lines joined)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


def test_unit_states_the_contract() -> None:
    """The settings the runtime relies on (issue 2, item 6)."""
    s = unit_settings(UNIT.read_text())
    one = {key: values[-1] for key, values in s.items()}
    assert one["Service.Type"] == "notify"
    assert one["Service.NotifyAccess"] == "main"
    assert one["Service.WatchdogSec"]
    assert one["Service.ExecStart"] == SHIPPED_EXEC_START.removeprefix("ExecStart=")
    assert one["Service.ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["Service.Restart"] == "on-failure"
    assert one["Service.KillMode"] == "mixed"
    assert one["Service.OOMPolicy"] == "continue"
    assert one["Service.StateDirectory"] == "otgate"
    assert one["Service.User"] == "otgate"
    assert one["Service.SupplementaryGroups"] == "dialout"
    assert one["Service.CapabilityBoundingSet"] == ""
    assert "plc_password" in s["Service.LoadCredential"]
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "RestrictNamespaces",
        "LockPersonality",
        "MemoryDenyWriteExecute",
    ):
        assert one[f"Service.{key}"] == "yes", key
    assert one["Service.ProtectSystem"] == "strict"
    assert one["Service.SystemCallArchitectures"] == "native"
    assert set(one["Service.RestrictAddressFamilies"].split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
    }
    after = " ".join(s["Unit.After"]).split()
    assert "network-online.target" in after and "redpanda.service" in after
    assert "network-online.target" in " ".join(s["Unit.Wants"]).split()
    assert "Unit.Requires" not in s, "a hard dependency belongs in 10-kafka.conf"
    # Graceful stop has time to run before the final SIGKILL; the watchdog
    # cannot fire between two pings of a live root (pings at WatchdogSec/2).
    assert _seconds(one["Service.TimeoutStopSec"]) >= 30
    assert _seconds(one["Service.WatchdogSec"]) >= 10


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)
