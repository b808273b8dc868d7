"""Resource samples of a soak run: resident memory and open file descriptors
of every gateway process, and the size of the gateway's state dir (its log).

Memory growth per hour is the slope of a least-squares line through the RSS
samples after the warm-up, per process. A bulkhead a fault killed comes back
as a new process with fresh memory and warms up again (the soak's ``pg``
restarted at 84.6 MiB and reached 87.1 in its first minute), so every process
skips the same warm-up from its own first sample: the run's first processes
from the start of production, a restarted one from the sample that first saw
its pid. The growth is fitted over the process with the most samples after its
own warm-up (its restarts are counted in the table); a process that lived less
than the warm-up is not fitted.

Between the full samples (every ``sample_interval_s``: the status endpoint
for the pids, file descriptors, the log's size) the RSS of the known pids is
read every ``RSS_EVERY_S`` too, and the fit uses those. A busy process's RSS
is a sawtooth: the soak's processing bulkhead frees 10-16 MiB of heap pages
and gives them back at each 30 s checkpoint. Sampled once a minute at a
drifting phase, that alone moves the fit of a 20-30 min process by tens of
MiB/h (measured on 20 min of that bulkhead at 14k points/s: RSS read every
2-4 s fits -10 MiB/h; minute samples of the same run fit -29 .. +8 MiB/h,
depending on their phase and on a spacing of 60 to 61 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import psutil

from otgate.simulations.gateway_process import GatewayProcess

MIB = 2**20
ROOT = "gateway (root)"
RSS_EVERY_S = 2.0
"""How often the RSS of the processes is read between full samples."""


@dataclass
class Sample:
    t: float  # seconds since production began
    procs: dict[str, tuple[int, int, int]]  # name -> (pid, rss bytes, open fds)
    log_bytes: int


@dataclass
class Samples:
    warmup_s: float
    taken: list[Sample] = field(default_factory=list)
    rss: list[Sample] = field(default_factory=list)
    """Between the full samples: the RSS of their processes (fds and log size as the
    last full sample)."""


def dir_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:  # deleted while we walked (WAL checkpoints, retention)
            continue
    return total


def take(gw: GatewayProcess, state_dir: Path, t: float) -> Sample:
    pids: dict[str, int] = {}
    if gw.proc is not None and gw.proc.poll() is None:
        pids[ROOT] = gw.proc.pid
        try:
            for c in gw.health()["components"]:
                if c.get("pid"):
                    pids[c["id"]] = c["pid"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # status endpoint busy: the root alone this time
    procs = {}
    for name, pid in pids.items():
        try:
            p = psutil.Process(pid)
            procs[name] = (pid, p.memory_info().rss, p.num_fds())
        except psutil.Error:
            continue
    return Sample(t, procs, dir_bytes(state_dir))


def take_rss(last: Sample, t: float) -> Sample:
    """The RSS of ``last``'s processes now (those still running)."""
    procs = {}
    for name, (pid, _, fds) in last.procs.items():
        try:
            procs[name] = (pid, psutil.Process(pid).memory_info().rss, fds)
        except psutil.Error:
            continue
    return Sample(t, procs, last.log_bytes)


async def sample_every(
    interval: float,
    gw: GatewayProcess,
    state_dir: Path,
    t0: float,
    end: float,
    samples: Samples,
    progress: Callable[[str], None],
) -> None:
    """Sample from now until ``end`` (monotonic), ``interval`` apart, and once at ``end``;
    the RSS alone every ``RSS_EVERY_S`` in between."""
    while True:
        now = time.monotonic()
        s = await anyio.to_thread.run_sync(take, gw, state_dir, min(now, end) - t0)
        samples.taken.append(s)
        rss = " ".join(f"{n}={v[1] / MIB:.1f}" for n, v in s.procs.items())
        progress(f"resources t={s.t:.0f}s RSS MiB {rss}; log {s.log_bytes / MIB:.1f} MiB")
        if now >= end:
            return
        due = min(end, now + interval)
        while (left := due - time.monotonic()) > RSS_EVERY_S:
            await anyio.sleep(RSS_EVERY_S)
            samples.rss.append(take_rss(s, time.monotonic() - t0))
        await anyio.sleep(max(0.0, left))


def slope_per_h(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) in value per hour; None under 3 points."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in points) / var * 3600


def growth(samples: Samples, name: str) -> tuple[float | None, int]:
    """RSS growth in MiB/h of ``name`` over its longest-lived process after that
    process's own warm-up, and how many times it was restarted during the whole run."""
    runs: dict[int, list[tuple[float, float]]] = {}
    born: dict[int, float] = {}  # pid -> when its warm-up began
    for s in samples.taken:
        if name in s.procs and (pid := s.procs[name][0]) not in born:
            born[pid] = 0.0 if not born else s.t  # the first process: since production began
    for s in sorted(samples.taken + samples.rss, key=lambda s: s.t):
        if name in s.procs:
            pid, rss, _ = s.procs[name]
            if pid in born and s.t >= born[pid] + samples.warmup_s:
                runs.setdefault(pid, []).append((s.t, rss / MIB))
    longest = max(runs.values(), key=len, default=[])
    return slope_per_h(longest), max(0, len(born) - 1)


def table(samples: Samples) -> list[dict]:
    """One row per process (first and last sample after warm-up), then the log."""
    after = [s for s in samples.taken if s.t >= samples.warmup_s] or samples.taken
    if not after:
        return []
    names: list[str] = []
    for s in samples.taken:
        names += [n for n in s.procs if n not in names]
    rows = []
    for name in names:
        seen = [s.procs[name] for s in after if name in s.procs]
        if not seen:
            continue
        rate, restarts = growth(samples, name)
        rows.append(
            {
                "what": f"RSS {name}",
                "restarts": restarts,
                "mib_start": round(seen[0][1] / MIB, 1),
                "mib_end": round(seen[-1][1] / MIB, 1),
                "mib_per_h": "-" if rate is None else round(rate, 2),
                "fds_start": seen[0][2],
                "fds_end": seen[-1][2],
            }
        )
    log_rate = slope_per_h([(s.t, s.log_bytes / MIB) for s in after])
    rows.append(
        {
            "what": "log size on disk (state dir)",
            "mib_start": round(after[0].log_bytes / MIB, 1),
            "mib_end": round(after[-1].log_bytes / MIB, 1),
            "mib_per_h": "-" if log_rate is None else round(log_rate, 2),
        }
    )
    return rows
