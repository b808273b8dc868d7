"""``otgate bench pipeline``: points/s end to end and gateway CPU per point.

A real ``otgate run`` with 20 simulated devices (synthetic sources, 100
points each) feeding raw → validator → clean → aggregator → 1 s windows →
PostgreSQL sink, against a private PostgreSQL. The offered rate is pushed
above what the pipeline can carry; the rate that lands in PostgreSQL over the
measuring window is the end-to-end throughput. CPU is counted per bulkhead
(user + system) — that breakdown is where the time goes. PostgreSQL's own
CPU is reported separately (it shares the machine, it is not gateway CPU).

Optional profile: with ``OTGATE_BENCH_PROFILE=DIR`` set, after the measuring
window (so the numbers above are not disturbed) every bulkhead and the
PostgreSQL backend are sampled with ``py-spy`` for ``OTGATE_BENCH_PROFILE_S``
seconds (default 10); collapsed stacks go to ``DIR/<bulkhead>.txt`` and the
top functions by own time are printed as progress lines. Needs ``py-spy`` on
PATH (``pip install py-spy``).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import anyio
import psutil
import psycopg

from otgate.simulations.bench_supervision import _poll
from otgate.simulations.gateway_process import GatewayProcess
from otgate.simulations.postgres_server import PostgresServer

TITLE = "otgate bench pipeline"
DEVICES, POINTS = 20, 100


def _config(state: Path, dsn: str, interval: float) -> str:
    points = ", ".join(
        f'{{ parameter = "p{j:03d}", signal = {{ kind = "sine", amplitude = 10.0, period_s = 30.0, noise = 0.1 }} }}'
        for j in range(POINTS)
    )
    out = [
        f"""
[gateway]
id = "bench-pipeline"
state_dir = "{state}"
[supervision]
heartbeat_interval = 1.0
[defaults]
memory_limit_mib = 2048
[processing.validator]
[processing.aggregator]
[[sinks]]
type = "postgres"
id = "pg"
dsn = "{dsn}"
topics = ["telemetry.clean", "telemetry.1s"]
[[bulkheads]]
id = "devices"
members = [{", ".join(f'"dev{i:02d}"' for i in range(DEVICES))}]
"""
    ]
    for i in range(DEVICES):
        out.append(f"""
[[adapters]]
type = "synthetic"
id = "dev{i:02d}"
asset_id = "asset-{i:02d}"
interval = {interval}
points = [{points}]
""")
    return "".join(out)


def _cpu(pids: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, p in pids.items():
        try:
            t = p.cpu_times()
            out[name] = t.user + t.system + getattr(t, "children_user", 0) * 0
        except psutil.Error:
            out[name] = 0.0
    return out


def _rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM public.otgate_readings").fetchone()[0]


def _measure(report, window: float, interval: float) -> None:
    pg = PostgresServer()
    pg.init()
    pg.start()
    with tempfile.TemporaryDirectory(prefix="otgate-bench-") as tmp:
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(_config(Path(tmp) / "state", pg.dsn(), interval))
        gw = GatewayProcess(cfg).start()
        try:
            _poll(lambda: gw.health()["status"] == "HEALTHY", 60, 0.1)
            offered = DEVICES * POINTS / interval
            report.progress(f"gateway up; offering {offered:,.0f} points/s; warming up 5 s")
            time.sleep(5)
            procs = {c["id"]: psutil.Process(c["pid"]) for c in gw.health()["components"]}
            root = psutil.Process(gw.proc.pid)
            procs["root + fork server"] = root
            extra = [p for p in root.children() if p.pid not in {q.pid for q in procs.values()}]
            pg_procs = [p for p in psutil.process_iter() if _is_pg(p, pg.port)]
            c0, r0, t0 = _cpu(procs), _rows(pg.dsn()), time.monotonic()
            e0 = sum(_cpu({str(p.pid): p for p in extra}).values())
            g0 = sum(_cpu({str(p.pid): p for p in pg_procs}).values())
            report.progress(f"measuring for {window:g} s")
            time.sleep(window)
            c1, r1, t1 = _cpu(procs), _rows(pg.dsn()), time.monotonic()
            e1 = sum(_cpu({str(p.pid): p for p in extra}).values())
            g1 = sum(_cpu({str(p.pid): p for p in pg_procs}).values())
            elapsed = t1 - t0
            landed = (r1 - r0) / elapsed
            cpu = {k: c1[k] - c0[k] for k in procs}
            cpu["root + fork server"] += e1 - e0
            total = sum(cpu.values())
            # Gateway CPU of the path raw → clean → 1 s → PostgreSQL: every bulkhead
            # but the simulated devices (their sampling and raw publish are the source).
            path = total - cpu["devices"]
            n = max(1, r1 - r0)
            report.add(
                stage="END TO END raw → PostgreSQL",
                points_per_s=landed,
                cpu_s=path,
                us_per_point=path / n * 1e6,
                goal="≥50k/s ≤20µs",
                ratio=f"{landed / 50_000:.2f} / {path / n * 1e6 / 20:.2f}",
            )
            for name, sec in sorted(cpu.items(), key=lambda kv: -kv[1]):
                report.add(
                    stage=f"  bulkhead {name}",
                    cpu_s=sec,
                    us_per_point=sec / max(1, r1 - r0) * 1e6,
                    share=f"{sec / total:.0%}" if total else "",
                )
            report.add(stage="offered by the devices", points_per_s=offered)
            report.add(
                stage="PostgreSQL server (not gateway CPU)",
                cpu_s=g1 - g0,
                us_per_point=(g1 - g0) / max(1, r1 - r0) * 1e6,
            )
            if os.environ.get("OTGATE_BENCH_PROFILE"):
                _profile(
                    report,
                    procs,
                    Path(os.environ["OTGATE_BENCH_PROFILE"]),
                    float(os.environ.get("OTGATE_BENCH_PROFILE_S", "10")),
                )
        finally:
            gw.stop()
            pg.cleanup()


def _profile(report, procs: dict[str, psutil.Process], out: Path, seconds: float) -> None:
    """Sample every bulkhead with py-spy at once; print the top own-time functions."""
    spy = shutil.which("py-spy")
    if spy is None:
        report.progress("OTGATE_BENCH_PROFILE set but py-spy is not on PATH; no profile")
        return
    out.mkdir(parents=True, exist_ok=True)
    report.progress(f"profiling every bulkhead for {seconds:g} s into {out}")
    runs = {}
    for name, p in procs.items():
        if name.startswith("root"):
            continue
        f = out / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.txt"
        runs[name] = (
            f,
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "-d",
                    str(int(seconds)),
                    "-r",
                    "100",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "-p",
                    str(p.pid),
                    "-o",
                    str(f),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        )
    for name, (f, run) in runs.items():
        run.wait(seconds + 60)
        if not f.exists():
            continue
        own: collections.Counter[str] = collections.Counter()
        total = 0
        for line in f.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            total += int(n)
            own[stack.rsplit(";", 1)[-1]] += int(n)
        report.progress(f"profile {name}: {total} samples; top own time:")
        for fn, n in own.most_common(15):
            report.progress(f"    {n / max(1, total):6.1%}  {fn}")


def _is_pg(p: psutil.Process, port: int) -> bool:
    try:
        return p.name().startswith("postgres") and any(
            str(port) in a for a in p.parent().cmdline() + p.cmdline()
        )
    except psutil.Error:
        return False


async def run(report, args) -> None:
    window = 10.0 if args.quick else 30.0
    await anyio.to_thread.run_sync(_measure, report, window, 0.02)
