"""The fault-injection harness: every shipped scenario loses and duplicates
nothing, and the checker does call a loss a loss."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from otgate.simulations.harness.checker import Stream, settled
from otgate.simulations.harness.cmd import load_scenario, summary, verdict
from otgate.simulations.harness.run import Outcome

SCENARIOS = sorted(
    p
    for p in (Path(__file__).resolve().parent.parent / "simulations" / "scenarios").glob("*.toml")
    if p.stem != "soak"  # a long run: `otgate simulate --scenario soak.toml --duration 1h`
)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_loses_nothing(scenario: Path, tmp_path: Path) -> None:
    load_scenario(scenario)  # valid before we spend time on it
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "otgate.supervisors.cli",
            "simulate",
            "--scenario",
            str(scenario),
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIP ")]
    if skipped and result.returncode == 0:
        pytest.skip(skipped[0])  # e.g. disk-full where no tmpfs can be mounted
    verdict = [line for line in result.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert verdict and verdict[0].startswith("PASS ")
    assert " lost=0 " in verdict[0] and " duplicates=0 " in verdict[0]
    assert "delivered=0 " not in verdict[0]


def test_checker_counts_losses_duplicates_and_not_read() -> None:
    mqtt = Stream("m", "mqtt", produced=5, read={1, 2, 3, 4}, delivered={1, 2, 3}, rows=4)
    modbus = Stream("p", "modbus", produced=10, read={2, 4, 6}, delivered={2, 4, 6}, rows=5)
    assert mqtt.lost == {4, 5}  # 4: read, never delivered; 5: acknowledged, never read
    assert mqtt.duplicates == 1
    assert modbus.lost == set() and modbus.not_read == 7 and modbus.duplicates == 0
    assert not settled({"m": mqtt, "p": modbus})
    total = summary({"m": mqtt, "p": modbus})
    assert (total["lost"], total["duplicates"], total["not_read"]) == (2, 1, 7)


def test_scenario_errors_name_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[faults]]\nat_s = 1.0\nkind = "kill_bulkhead"\n')
    res = subprocess.run(
        [sys.executable, "-m", "otgate.supervisors.cli", "simulate", "--scenario", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "faults[0]: kill_bulkhead needs a target bulkhead" in res.stderr


def test_verdict_fails_dead_devices_unclean_stops_and_failed_parts() -> None:
    live = Stream("m", "mqtt", produced=3, read={1, 2, 3}, delivered={1, 2, 3}, rows=3)
    assert verdict(Outcome({"m": live}, exit_code=0)) == []
    never_read = Stream("p", "modbus", produced=50)
    assert verdict(Outcome({"m": live, "p": never_read}, exit_code=0)) == [
        "p: nothing read or delivered"
    ]
    assert verdict(Outcome({"m": live}, exit_code=1)) == ["gateway exit code 1 (expected 0)"]
    assert verdict(Outcome({"m": live}, exit_code=0, failed=["pg"])) == ["FAILED at the end: pg"]


def test_reload_storm_files_alternate_broken_and_valid(tmp_path: Path) -> None:
    from otgate.config.load import ConfigError, load_config
    from otgate.simulations.harness.reload_storm import versions
    from otgate.simulations.harness.run import gateway_toml, modbus_devices
    from otgate.simulations.harness.scenario import Scenario

    sc = Scenario(name="storm")
    devices = modbus_devices(sc.devices)
    for dev in devices:
        dev.port = 15020  # bound when the device starts
    original = gateway_toml(sc, tmp_path / "state", "t0ken", 1883, devices, "host=127.0.0.1")
    files = versions(original, 20)
    assert [ok for _, ok in files] == [False, True] * 10
    assert files[-1] == (original, True) and files[1][0] != original  # a real change first
    for i, (text, ok) in enumerate(files):
        path = tmp_path / f"v{i}.toml"
        path.write_text(text)
        try:
            load_config(path, resolve=False)
            loaded = True
        except ConfigError:
            loaded = False
        assert loaded is ok, f"file {i}"


def test_healthy_device_polling_gaps_fail_the_verdict() -> None:
    # Counted 1..10 before the gateway's first poll (not a gap), then missed 3 of 90.
    read = set(range(11, 101)) - {40, 41, 42}
    healthy = Stream("h", "modbus", produced=100, read=read, delivered=read, max_not_read=0.02)
    assert healthy.gaps == (3, 90)
    assert verdict(Outcome({"h": healthy}, exit_code=0)) == [
        "h: missed 3 of 90 counts since its first read "
        "(more than 2%: its polling was disturbed)"
    ]
    healthy.max_not_read = 0.05
    assert verdict(Outcome({"h": healthy}, exit_code=0)) == []
    slow = Stream("s", "modbus", produced=100, read={5, 50}, delivered={5, 50})
    assert verdict(Outcome({"s": slow}, exit_code=0)) == []  # unchecked: it is the slow one


def test_more_slow_and_flapping_devices_than_devices_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[devices]\nmodbus = 1\nmodbus_slow = 1\nmodbus_flapping = 1\n')
    with pytest.raises(Exception, match="modbus_slow \\+ modbus_flapping"):
        load_scenario(bad)


def test_disk_fill_needs_a_small_filesystem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[faults]]\nat_s = 1.0\nkind = "disk_fill"\nfill_pct = [96.0]\n')
    with pytest.raises(Exception, match="disk_fill needs fill_pct and the scenario's disk_mib"):
        load_scenario(bad)


def test_broker_kill_needs_the_kafka_backend(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[faults]]\nat_s = 1.0\nkind = "broker_kill"\n')
    with pytest.raises(Exception, match="broker_kill needs log_backend = 'kafka'"):
        load_scenario(bad)
    bad.write_text('name = "x"\nlog_backend = "kafka"\n[[faults]]\nat_s = 1.0\nkind = "broker_kill"\n')
    assert load_scenario(bad).faults[0].duration_s == 3.0
