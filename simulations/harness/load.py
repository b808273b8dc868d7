"""Background load for a scenario: synthetic devices in a bulkhead ``load``
(the shape of ``otgate bench pipeline``), and how much of it reached PostgreSQL."""

from __future__ import annotations

import psycopg

from otgate.simulations.harness.scenario import Scenario

PREFIX = "load-"


def load_toml(sc: Scenario) -> str:
    """Adapters and bulkhead of the load, and the telemetry retention."""
    out = []
    if sc.telemetry_retention_s is not None:
        for topic in ("telemetry.raw", "telemetry.clean", "telemetry.1s"):
            out.append(f"""
[log.topics."{topic}"]
retention_s = {sc.telemetry_retention_s}
""")
    ld = sc.load
    if not ld.devices:
        return "".join(out)
    points = ", ".join(
        f'{{ parameter = "p{j:03d}", signal = {{ kind = "sine", amplitude = 10.0, '
        f"period_s = 30.0, noise = 0.1 }} }}"
        for j in range(ld.points)
    )
    ids = [f"load{i:02d}" for i in range(ld.devices)]
    out.append(f"""
[[bulkheads]]
id = "load"
members = [{", ".join(f'"{i}"' for i in ids)}]
""")
    for i, aid in enumerate(ids):
        out.append(f"""
[[adapters]]
type = "synthetic"
id = "{aid}"
asset_id = "{PREFIX}{i:02d}"
interval = {ld.interval_s}
seed = {i}
points = [{points}]
""")
    return "".join(out)


def landed(dsn: str, table: str) -> int:
    """Load readings in PostgreSQL so far."""
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE asset_id LIKE '{PREFIX}%'")
        return int(row.fetchone()[0])
