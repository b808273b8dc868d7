"""The disk-full scenario: the gateway's state on a small tmpfs, a ballast file
that walks that filesystem through the log's disk tiers, and the checks of
what the log did (tiers in order, raw evicted first, alarms and DLQs never,
a CRITICAL block event, back to OK once the ballast is gone)."""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from otgate.actors.log.cmd import read_rows
from otgate.actors.log.config import LogConfig
from otgate.actors.log.topics import never_evicted
from otgate.simulations.harness.scenario import Fault
from otgate.simulations.report import Report

BALLAST = "ballast.bin"
TIERS = ["ALERT", "DROP_RAW", "EVICT", "BLOCK"]


class DiskUnavailable(Exception):
    """No size-limited filesystem can be mounted here (mounting needs root)."""


@contextlib.contextmanager
def small_filesystem(path: Path, size_mib: int) -> Iterator[Path]:
    """Mount a ``size_mib`` tmpfs on ``path`` for the duration; unmount after."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "otgate-disk", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError as exc:
        raise DiskUnavailable(f"cannot run mount: {exc}") from None
    if done.returncode != 0:
        raise DiskUnavailable(f"cannot mount a tmpfs on {path}: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def used_pct(path: Path) -> float:
    u = shutil.disk_usage(path)
    return 100.0 * (u.total - u.free) / u.total


def grow_ballast(path: Path, pct: float) -> float:
    """Append to the ballast file until the filesystem is ``pct`` % used."""
    total = shutil.disk_usage(path).total
    with open(path / BALLAST, "ab") as f:
        while (now := used_pct(path)) < pct:
            need = int((pct - now) / 100 * total) + 4096
            try:
                f.write(b"\0" * min(need, 1 << 20))
                f.flush()
            except OSError:  # full: the log got there first
                break
    return used_pct(path)


@dataclass
class DiskWatch:
    """What the harness saw while it held the disk full (live: the log may evict
    its own events later)."""

    events: list[tuple[str, str, str]] = field(default_factory=list)  # kind, severity, tier
    appended_while_blocked: int | None = None  # raw records appended while held at block


async def fill_through(fault: Fault, state_dir: Path, report: Report, watch: DiskWatch) -> None:
    """disk_fill: fill to each of ``fault.fill_pct`` in turn, holding each for
    ``duration_s`` (topped up as the log frees space); then delete the ballast
    (space freed)."""
    log_cfg = LogConfig()
    try:
        for pct in fault.fill_pct:
            got = await anyio.to_thread.run_sync(grow_ballast, state_dir, pct)
            report.progress(f"disk filled to {got:.1f}% (target {pct:g}%)")
            end = time.monotonic() + fault.duration_s
            settle = time.monotonic() + min(1.0, fault.duration_s / 2)  # guards notice
            before = None
            while time.monotonic() < end:
                # another writer keeps the disk this full: what the log evicts is taken
                # again, so the tier above is reached whatever the log could free
                await anyio.to_thread.run_sync(grow_ballast, state_dir, pct)
                await _watch_events(log_cfg, state_dir, watch)
                if pct >= log_cfg.disk_tiers.block_pct and before is None:
                    if time.monotonic() >= settle:
                        before = _raw_next(state_dir / log_cfg.path)
                await anyio.sleep(0.2)
            if before is not None:
                watch.appended_while_blocked = _raw_next(state_dir / log_cfg.path) - before
    finally:
        (state_dir / BALLAST).unlink(missing_ok=True)
        report.progress(f"disk space freed: {used_pct(state_dir):.1f}% used")


async def _watch_events(log_cfg: LogConfig, state_dir: Path, watch: DiskWatch) -> None:
    for e in await read_rows(log_cfg, state_dir, "logs.gateway", 0, 10**9):
        if e.get("kind") in ("disk_tier", "disk_block"):
            seen = (e["kind"], e["severity"], e["fields"]["tier"])
            if seen not in watch.events:
                watch.events.append(seen)


def _raw_next(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (n,) = con.execute(
            "SELECT SUM(p.next_offset) FROM partitions p JOIN topics t ON t.tid = p.tid"
            " WHERE t.name = 'telemetry.raw'"
        ).fetchone()
        return n or 0
    finally:
        con.close()


_TIER = re.compile(r"log_disk_tier tier=(\w+)")
_OVERFLOW = re.compile(r"log_overflow topic=(\S+) .*reason=(disk_\w+)")


def fired(gateway_logs: list[Path]) -> tuple[list[str], list[tuple[str, str]]]:
    """From the gateway's log lines: tier changes, and disk evictions (topic, reason),
    in order. A tier counts as fired when it acted (drop_raw/evict deleted) even if
    that brought usage back under it before its change was logged."""
    tiers: list[str] = []
    evicted: list[tuple[str, str]] = []
    for path in gateway_logs:
        for line in path.read_text(errors="replace").splitlines():
            if m := _TIER.search(line):
                tiers.append(m[1])
            elif m := _OVERFLOW.search(line):
                evicted.append((m[1], m[2]))
                tiers.append("DROP_RAW" if m[2] == "disk_drop_raw" else "EVICT")
    return tiers, evicted


def check_disk(
    state_dir: Path, log_cfg: LogConfig, workdir: Path, watch: DiskWatch
) -> tuple[list[str], str]:
    """What the log did about the disk (from the gateway's logs in ``workdir``
    and its log database): problems, and a one-line account."""
    tiers, evicted = fired(sorted(workdir.glob("gateway*.log")))
    problems = []
    firsts = [tiers.index(t) if t in tiers else None for t in TIERS]
    if None in firsts or firsts != sorted(firsts):  # type: ignore[type-var]
        problems.append(f"disk tiers not all fired in order {TIERS}")
    if ("disk_block", "CRITICAL", "BLOCK") not in watch.events:
        problems.append(f"no CRITICAL disk_block event seen: {watch.events}")
    if watch.appended_while_blocked is None or watch.appended_while_blocked > 0:
        problems.append(
            f"producers did not block at the block tier: {watch.appended_while_blocked} appended"
        )
    if tiers and tiers[-1] != "OK":
        problems.append(f"disk tier did not return to OK after the space was freed: {tiers[-1]}")
    if not evicted or evicted[0][0] != "telemetry.raw":
        problems.append(f"raw telemetry was not the first evicted: {evicted[:3]}")
    problems += [f"{t} evicted ({why})" for t, why in evicted if never_evicted(t)]
    kept = _never_evicted_starts(state_dir / log_cfg.path)
    problems += [f"{t} lost its oldest records (starts at {s})" for t, (s, _) in kept.items() if s]
    alarms = sum(n for t, (_, n) in kept.items() if t.startswith("alarms."))
    if not alarms:
        problems.append("no alarm records written: the never-evicted check saw nothing")
    changes = [t for i, t in enumerate(tiers) if i == 0 or tiers[i - 1] != t]
    account = (
        f"disk: tiers {' > '.join(changes)}; {len(evicted)} evictions, first "
        f"{evicted[0][0] if evicted else '-'}; {watch.appended_while_blocked} raw appended "
        f"while blocked; kept {alarms} alarm records, "
        f"{sum(n for t, (_, n) in kept.items() if t.startswith('dlq.'))} dead letters"
    )
    return problems, account


def _never_evicted_starts(db: Path) -> dict[str, tuple[int, int]]:
    """For alarms.* and dlq.*: (first offset still held, records appended)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT t.name, MIN(p.start_offset), SUM(p.next_offset) FROM partitions p"
            " JOIN topics t ON t.tid = p.tid GROUP BY t.name"
        ).fetchall()
    finally:
        con.close()
    return {name: (start, total) for name, start, total in rows if never_evicted(name)}

