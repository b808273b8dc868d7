"""``otgate bench supervision``: how fast the tree heals and what it costs.

Runs a real ``otgate run`` with N synthetic bulkheads and measures, from the
outside: SIGKILL of a bulkhead → its replacement ready (/health shows the new
pid RUNNING) and → the new session's first reading; USS per bulkhead; idle
CPU of the whole process family. In-process crash → restart is measured on a
Supervisor in this process (timestamps taken inside the actors).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import anyio
import anyio.lowlevel
import psutil

from otgate.actors.actor import Actor
from otgate.simulations.gateway_process import GatewayProcess
from otgate.supervisors.spec import ChildSpec, SupervisorFlags
from otgate.supervisors.supervisor import Supervisor

TITLE = "otgate bench supervision"


def _config(n: int, interval: float, heartbeat: float) -> str:
    parts = [
        f'[gateway]\nid = "bench"\n[supervision]\nheartbeat_interval = {heartbeat}\n'
        "heartbeat_timeout = 3.0\n"
    ]
    for i in range(n):
        parts.append(
            f'[[adapters]]\ntype = "synthetic"\nid = "b{i:02d}"\nasset_id = "asset-{i}"\n'
            f"interval = {interval}\n"
            'points = [{ parameter = "p", signal = { kind = "sine", amplitude = 1.0 } }]\n'
        )
    return "".join(parts)


def _health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=5) as resp:
        return json.load(resp)


def _poll(predicate, timeout: float = 30.0, interval: float = 0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not reached")


def _node(url: str, cid: str) -> dict:
    return next(c for c in _health(url)["components"] if c["id"] == cid)


def _family_cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _gateway_numbers(report, n: int, kills: int, idle_s: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.toml"
        # Heartbeats every 0.1 s so /health sees a new session's first reading within 0.1 s.
        cfg.write_text(_config(n, interval=0.05, heartbeat=0.1))
        gw = GatewayProcess(cfg).start()
        url = gw.url
        try:
            _poll(lambda: _health(url)["status"] == "HEALTHY", 60, 0.05)
            report.progress(f"gateway up with {n} bulkheads at {url}")

            ready_ms, first_ms = [], []
            for i in range(kills):
                cid = f"b{i % n:02d}"
                old = _node(url, cid)
                t0 = time.perf_counter()
                os.kill(old["pid"], signal.SIGKILL)

                def replaced(cid=cid, old=old):
                    node = _node(url, cid)
                    return node["pid"] != old["pid"] and node["state"] == "RUNNING" and node

                _poll(replaced)
                ready_ms.append((time.perf_counter() - t0) * 1000)

                def reading(cid=cid):
                    kids = [k for k in _node(url, cid)["children"] if k["id"] == cid]
                    return kids and kids[0]["metrics"].get("readings_published", 0) > 0

                _poll(reading, interval=0.01)
                first_ms.append((time.perf_counter() - t0) * 1000)
                report.progress(f"kill {i + 1}/{kills}: ready after {ready_ms[-1]:.0f} ms")
            _row(
                report, "SIGKILL → replacement ready (incl. 50 ms backoff)", ready_ms, "ms", 1000.0
            )
            _row(report, "SIGKILL → first reading of new session (±0.1 s)", first_ms, "ms", 1000.0)

            # Idle: sessions sampling once every 10 s, default 1 s heartbeats.
            cfg.write_text(_config(n, interval=10.0, heartbeat=1.0))
            gw.proc.send_signal(signal.SIGHUP)
            _poll(lambda: "config_reloaded" in gw.log(), 60, 0.05)
            _poll(lambda: _health(url)["status"] == "HEALTHY", 60, 0.05)
            time.sleep(2.0)  # let the restarted bulkheads settle before measuring
            root = psutil.Process(gw.proc.pid)
            family = [root, *root.children(recursive=True)]
            bulkheads = {c["pid"] for c in _health(url)["components"] if c["id"] != "log"}
            uss = [p.memory_full_info().uss for p in family if p.pid in bulkheads]
            others = [p for p in family if p.pid not in bulkheads]
            report.progress(f"measuring idle CPU for {idle_s:.0f} s")
            c0, w0 = _family_cpu(family), time.monotonic()
            time.sleep(idle_s)
            cpu = (_family_cpu(family) - c0) / (time.monotonic() - w0) * 100
            _row(report, "USS per bulkhead", [u / 2**20 for u in uss], "MiB")
            shared = sum(p.memory_full_info().uss for p in others) / 2**20
            _row(report, "USS root + fork server + resource tracker", [shared], "MiB")
            _row(report, f"idle CPU, whole gateway, {n} bulkheads", [cpu], "% of a core")
        finally:
            gw.stop()


class _Crasher(Actor):
    kind = "bench"

    def __init__(self, marks: list[float], crash: anyio.Event) -> None:
        super().__init__("crasher")
        self.marks, self.crash = marks, crash

    async def setup(self) -> None:
        self.marks.append(time.perf_counter())

    async def main(self) -> None:
        await self.crash.wait()
        self.marks.append(time.perf_counter())
        raise RuntimeError("bench crash")


async def _in_process(report, rounds: int, backoff: float) -> None:
    marks: list[float] = []
    events = [anyio.Event() for _ in range(rounds + 1)]
    it = iter(events)
    flags = SupervisorFlags(
        intensity=rounds * 2, period=60, backoff_initial=backoff, jitter=0.0, backoff_max=backoff
    )
    sup = Supervisor("bench", [ChildSpec(id="c", start=lambda: _Crasher(marks, next(it)))], flags)
    gaps = []
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        for i in range(rounds):
            n = len(marks)
            events[i].set()
            while len(marks) < n + 2:
                await anyio.lowlevel.checkpoint()
            gaps.append((marks[n + 1] - marks[n]) * 1e6)
        tg.cancel_scope.cancel()
    _row(report, f"in-process crash → restarted (backoff {backoff * 1000:g} ms)", gaps, "µs")


def _row(report, measure: str, values: list[float], unit: str, goal: float | None = None) -> None:
    median = statistics.median(values)
    report.add(
        measure=measure,
        n=len(values),
        median=median,
        max=max(values),
        unit=unit,
        goal=goal if goal is not None else "",
        ratio=median / goal if goal else "",
    )


async def run(report, args) -> None:
    n = 10
    kills = 5 if args.quick else 10
    report.progress("in-process restarts")
    await _in_process(report, 200, 0.0)
    await _in_process(report, 20 if args.quick else 50, 0.1)
    await anyio.to_thread.run_sync(_gateway_numbers, report, n, kills, 5.0 if args.quick else 15.0)
