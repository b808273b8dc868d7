"""The soak's parts: ``--duration`` stretches the timeline, memory growth is a
least-squares fit over the longest-lived process after its own warm-up, the resource
table names every process and the log, and the load lands in the config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from otgate.simulations.harness.cmd import load_scenario
from otgate.simulations.harness.load import load_toml
from otgate.simulations.harness.resources import MIB, Sample, Samples, growth, slope_per_h, table
from otgate.simulations.harness.scenario import Scenario, stretch

SOAK = Path(__file__).resolve().parent.parent / "simulations" / "scenarios" / "soak.toml"


def test_duration_stretches_faults_samples_and_warmup_not_fault_lengths() -> None:
    sc = load_scenario(SOAK)
    long = stretch(sc, 3600.0)
    k = 3600.0 / sc.duration_s
    assert long.duration_s == 3600.0
    assert [f.at_s for f in long.faults] == pytest.approx([f.at_s * k for f in sc.faults])
    assert [f.duration_s for f in long.faults] == [f.duration_s for f in sc.faults]
    assert long.resources.sample_interval_s == pytest.approx(sc.resources.sample_interval_s * k)
    assert long.resources.warmup_s == pytest.approx(sc.resources.warmup_s * k)
    gaps = [b.at_s - a.at_s for a, b in zip(long.faults, long.faults[1:], strict=False)]
    assert min(gaps) >= 120 and max(gaps) <= 600  # a fault every few minutes over 1 h


def test_slope_is_per_hour_and_needs_three_points() -> None:
    assert slope_per_h([(0.0, 10.0), (60.0, 11.0), (120.0, 12.0)]) == pytest.approx(60.0)
    assert slope_per_h([(0.0, 10.0), (60.0, 11.0)]) is None


def _sample(t: float, pid: int, rss_mib: float, log_mib: float = 1.0) -> Sample:
    return Sample(t, {"pg": (pid, int(rss_mib * MIB), 20)}, int(log_mib * MIB))


def test_growth_fits_the_longest_lived_process_after_warmup() -> None:
    s = Samples(warmup_s=60.0)
    # warm-up: fast growth, ignored; pid 1 grows 1 MiB/min after warm-up;
    # then killed: pid 2 starts small (its drop must not read as shrinking).
    s.taken += [_sample(0, 1, 50), _sample(30, 1, 80)]
    s.taken += [_sample(60 + 60 * i, 1, 100 + i) for i in range(10)]
    s.taken += [_sample(700 + 60 * i, 2, 60) for i in range(3)]
    rate, restarts = growth(s, "pg")
    assert rate == pytest.approx(60.0) and restarts == 1
    rows = table(s)
    assert rows[0]["what"] == "RSS pg" and rows[0]["mib_start"] == 100.0
    assert rows[0]["mib_end"] == 60.0 and rows[0]["fds_end"] == 20
    assert rows[-1]["what"].startswith("log size") and rows[-1]["mib_per_h"] == 0.0


def test_a_restarted_process_skips_its_own_warmup() -> None:
    # the 1 h soak's pg: killed at 29 min, back at 84.6 MiB, +2.5 MiB in its first
    # minute (its warm-up), flat after; the run's warm-up alone left that ramp in the fit
    s = Samples(warmup_s=360.0)
    s.taken += [_sample(t, 1, 80.0) for t in range(0, 1740, 10)]
    s.taken += [_sample(t, 2, min(87.1, 84.6 + 2.5 * (t - 1750) / 60)) for t in range(1750, 3600, 10)]
    rate, restarts = growth(s, "pg")
    assert restarts == 1 and rate == pytest.approx(0.0, abs=1e-9)
    s.warmup_s = 0.0  # pid 2 from its start: the ramp alone reads as +0.54 MiB/h
    assert growth(s, "pg")[0] == pytest.approx(0.54, abs=0.01)


def test_load_and_retention_make_a_valid_gateway_config(tmp_path: Path) -> None:
    from otgate.config.load import load_config
    from otgate.simulations.harness.run import gateway_toml, modbus_devices

    sc = load_scenario(SOAK)
    assert round(sc.load.points_per_s) == 14_286  # half the pipeline bench
    devices = modbus_devices(sc.devices)
    for d in devices:
        d.port = 15020
    text = gateway_toml(sc, tmp_path / "state", "t0ken", 1883, devices, "host=127.0.0.1")
    doc = tomllib.loads(text)
    assert [b["id"] for b in doc["bulkheads"]] == ["load"]
    assert doc["log"]["topics"]["telemetry.raw"]["retention_s"] == 60.0
    path = tmp_path / "gw.toml"
    path.write_text(text)
    cfg = load_config(path, resolve=False).config
    assert sum(1 for a in cfg.adapters if a.id.startswith("load")) == 20
    assert load_toml(Scenario(name="x")) == ""


def test_growth_fits_the_rss_read_between_full_samples() -> None:
    # a flat process whose RSS is a 30.5 s sawtooth of 12 MiB (the processing bulkhead's
    # heap between trims), over 30 min; full samples 60 s apart meet it at a drifting phase
    def rss(t: float) -> float:
        return 200 + 12 * (t % 30.5) / 30.5

    s = Samples(warmup_s=0.0)
    s.taken += [_sample(t, 1, rss(t)) for t in range(0, 1800, 60)]
    minutes_only = growth(s, "pg")[0]
    s.rss += [_sample(t, 1, rss(t)) for t in range(0, 1800, 2) if t % 60]
    rate, _ = growth(s, "pg")
    assert abs(minutes_only) > 5.0  # what the minute samples alone made of it
    assert abs(rate) < 1.0
    assert table(s)[0]["mib_start"] == 200.0  # the table's start and end: full samples
