"""``otgate bench writes``: write latency while the gateway reads at full rate.

A real ``otgate run`` reads 20 Modbus TCP devices (100 points each, the
``bench protocols`` layout, ``poll_interval`` ~0: as fast as the simulator
answers) onto the embedded log; each device also has one writable setpoint.
The simulator is pymodbus' server in its own process (bench_modbus --serve).

Windows alternate: without writes, with writes (HTTP ``POST
/points/{asset}/sp/write``, round robin over the devices, at
``WRITES_PER_S``), without, with, ... ending without. Each window with
writes is compared with the mean of the two without around it, and the drop
is the median of those paired ratios: on a shared machine the load drifts
between windows, and pairing neighbours keeps most of that drift out (a
pair's length is no multiple of the log's 10 s retention cycle, so that
periodic scan does not always hit the same kind of window). For
every write, latency = its request record's ``gateway_time`` to its final
result record's ``gateway_time`` (the session executes, reads back and
appends the result; ``CommandResult.latency_ms``), broken into the steps
the sessions time (``writes_ms_<step>`` metrics, ``STEPS``). The read rate is the sum
of the sessions' ``readings_published`` over each window (from ``/health``);
``read drop`` compares the windows with and without writes. Each process's
CPU (the gateway's root and devices bulkhead, the simulator, this bench's
client) and the sessions' poll cycle, split into its reads (holding the bus)
and its readings' durable append, are reported with and without writes: on
a shared 2-core machine the read rate follows the CPU the other processes
leave, and the simulator is one of them.

Anchor: Neuron publishes a 523 ms average write latency during 100k points/s
collection. Goal here: p99 < 50 ms with the read rate within 5 % of the
no-write run. Numbers, not pass/fail.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import anyio
import psutil

from otgate.simulations.bench_modbus import POINTS, device_points, start_simulator
from otgate.simulations.bench_supervision import _poll
from otgate.simulations.gateway_process import GatewayProcess

TITLE = "otgate bench writes: write latency while reading 20 Modbus devices at full rate"
DEVICES = 20
WRITES_PER_S = 20.0
TOKEN = "bench-engineer"
STEPS = {  # the sessions' writes_ms_<step>: each step's time after the one before it
    "nudge": "request stamped -> the nudge reached the session",
    "fetch": "nudge -> fetched (and, on the embedded log, marked taken in the ledger)",
    "handle": "fetched -> decoded and checked",
    "ledger_wait": "waiting for the ledger entry (when not marked with the fetch)",
    "bus_wait": "waiting for the bus (the poll's current read)",
    "ledger": "(included above) the ledger entry's own time (pwrite + fdatasync)",
    "write": "write request round trip",
    "read_back": "read-back round trip",
    "execute_end": "read back -> the protocol's write returned",
    "result_append": "final result stamped -> appended (not in the latency)",
    "ledger_done": "ledger 'done' entry (not in the latency)",
}
SP_ADDRESS = 300
POLL_PARTS = {  # a session's poll, mean per poll
    "poll cycle ms": "poll cycle of a session (20 x window / polls)",
    "poll bus ms": "poll: its reads, holding the bus (incl. writes it let in)",
    "poll publish ms": "poll: its readings' durable append",
}


def _config(state: Path, port: int) -> str:
    pts = ", ".join(
        "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in p.items() if k != "signal") + " }"
        for p in device_points()
    )
    out = [f"""
[gateway]
id = "bench-writes"
state_dir = "{state}"
[status]
tokens = [{{ token = "{TOKEN}", role = "engineer", name = "bench" }}]
[supervision]
heartbeat_interval = 1.0
[defaults]
memory_limit_mib = 2048
[[bulkheads]]
id = "devices"
members = [{", ".join(f'"dev{u}"' for u in range(1, DEVICES + 1))}]
"""]
    for u in range(1, DEVICES + 1):
        out.append(f"""
[[adapters]]
type = "modbus_tcp"
id = "dev{u}"
host = "127.0.0.1"
port = {port}
poll_interval = 0.0001
timeout = 2.0
[[adapters.groups]]
unit_id = {u}
asset_id = "asset{u}"
points = [{pts}, {{ parameter = "sp", address = {SP_ADDRESS}, type = "int16", writable = true }}]
""")
    return "".join(out)


def _session_metrics(gw: GatewayProcess) -> dict[str, float]:
    """The Modbus sessions' metrics summed over the devices."""
    total: dict[str, float] = {}

    def walk(node: dict[str, Any]) -> None:
        if node["kind"] == "modbus_tcp":
            for k, v in node.get("metrics", {}).items():
                total[k] = total.get(k, 0.0) + v
        for child in node.get("children", []):
            walk(child)

    for comp in gw.health()["components"]:
        walk(comp)
    return total


def _processes(gw: GatewayProcess, sim_pid: int) -> dict[str, psutil.Process]:
    """The gateway root, its devices bulkhead (by process title), the simulator and
    this bench (its HTTP client: CPU the writes cost the shared machine too)."""
    out = {"root": psutil.Process(gw.proc.pid), "simulator": psutil.Process(sim_pid),
           "bench client": psutil.Process()}
    for p in gw.descendants():
        with contextlib.suppress(psutil.Error):
            if "bulkhead devices" in " ".join(p.cmdline()):
                out["devices"] = p
    return out


def _cpu(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, p in procs.items():
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[name] = t.user + t.system
    return out


class _Client:
    """One kept-alive HTTP connection to the status endpoint (the bench's own
    client CPU stays small: it shares the machine with the gateway)."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)

        self.post_s: list[float] = []

    def write(self, asset: str, value: int) -> str:
        t0 = time.perf_counter()
        self.conn.request(
            "POST", f"/points/{asset}/sp/write", body=json.dumps({"value": value}),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        resp = self.conn.getresponse()
        body = resp.read()
        self.post_s.append(time.perf_counter() - t0)
        if resp.status != 202:
            raise RuntimeError(f"write refused: HTTP {resp.status} {body[:200]!r}")
        return json.loads(body)["request_id"]


def _window(
    gw: GatewayProcess, client: _Client, seconds: float, writes_per_s: float,
    cpu: dict[str, list[float]], procs: dict[str, psutil.Process],
) -> tuple[float, list[str]]:
    """Read rate over ``seconds`` while posting ``writes_per_s`` writes; their ids.

    Adds each process's CPU (s per s) over the window to ``cpu[name]``, and the
    sessions' mean poll cycle (ms) to ``cpu["poll cycle ms"]``."""
    rids: list[str] = []
    c0 = _cpu(procs)
    m0, t0 = _session_metrics(gw), time.monotonic()
    r0 = m0.get("readings_published", 0.0)
    end = t0 + seconds
    n = 0
    while (now := time.monotonic()) < end:
        if writes_per_s:
            rids.append(client.write(f"asset{n % DEVICES + 1}", n % 1000))
            n += 1
            time.sleep(max(0.0, t0 + n / writes_per_s - time.monotonic()))
        else:
            time.sleep(min(0.5, end - now))
    m1, t1 = _session_metrics(gw), time.monotonic()
    r1 = m1.get("readings_published", 0.0)
    c1 = _cpu(procs)
    for name in c1.keys() & c0.keys():
        cpu.setdefault(name, []).append((c1[name] - c0[name]) / (t1 - t0))
    polls = m1.get("polls", 0.0) - m0.get("polls", 0.0)
    if polls:
        cpu.setdefault("poll cycle ms", []).append(1e3 * DEVICES * (t1 - t0) / polls)
        for part in ("bus", "publish"):
            spent = m1.get(f"poll_{part}_s", 0.0) - m0.get(f"poll_{part}_s", 0.0)
            cpu.setdefault(f"poll {part} ms", []).append(1e3 * spent / polls)
    return (r1 - r0) / (t1 - t0), rids


def _final(gw: GatewayProcess, rid: str) -> dict[str, Any] | None:
    status, view = gw.get(f"/commands/{rid}", TOKEN)
    return view if status == 200 and view["final"] else None


def _measure(report: Any, port: int, sim_pid: int, window: float, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="otgate-bench-") as tmp:
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(_config(Path(tmp) / "state", port))
        gw = GatewayProcess(cfg).start()
        try:
            _poll(lambda: gw.get("/health/ready")[0] == 200, 60, 0.1)
            report.progress("gateway up; warming up 3 s")
            time.sleep(3)
            client = _Client(gw.url)
            procs = _processes(gw, sim_pid)
            cpu_quiet: dict[str, list[float]] = {}
            cpu_busy: dict[str, list[float]] = {}
            steps0 = _session_metrics(gw)
            quiet = [_window(gw, client, window, 0.0, cpu_quiet, procs)[0]]
            busy, rids = [], []
            report.progress(f"without writes: {quiet[-1]:,.0f} readings/s")
            for i in range(rounds):
                rate, ids = _window(gw, client, window, WRITES_PER_S, cpu_busy, procs)
                busy.append(rate)
                rids += ids
                report.progress(
                    f"round {i + 1}/{rounds} with {len(ids)} writes: {rate:,.0f} readings/s"
                )
                quiet.append(_window(gw, client, window, 0.0, cpu_quiet, procs)[0])
                report.progress(f"without writes: {quiet[-1]:,.0f} readings/s")
            views = [_poll(lambda r=r: _final(gw, r), 60, 0.05) for r in rids]
            steps1 = _session_metrics(gw)
        finally:
            gw.stop()
    lat = sorted(v["latency_ms"] for v in views)
    statuses: dict[str, int] = {}
    for v in views:
        statuses[v["status"]] = statuses.get(v["status"], 0) + 1
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else lat * 99
    no_w, with_w = statistics.median(quiet), statistics.median(busy)
    drop = statistics.median(
        1 - b / ((quiet[i] + quiet[i + 1]) / 2) for i, b in enumerate(busy)
    )
    scenario = f"{DEVICES} dev x {POINTS + 1} pts, embedded log"
    posted_per_s = len(rids) / (rounds * window)  # a loaded machine posts fewer than asked
    report.add(measure="write latency p50 (request -> result record)", scenario=scenario,
               value=f"{q[49]:.1f} ms", goal="", anchor="")
    report.add(measure="write latency p99", scenario=scenario, value=f"{q[98]:.1f} ms",
               goal="< 50 ms", anchor="Neuron: 523 ms avg")
    report.add(measure="write latency mean / max", scenario=scenario,
               value=f"{statistics.fmean(lat):.1f} / {lat[-1]:.1f} ms", goal="", anchor="")
    report.add(measure="writes", scenario=f"{WRITES_PER_S:g}/s asked, "
               f"{posted_per_s:.1f}/s posted, round robin",
               value=", ".join(f"{k} {n}" for k, n in sorted(statuses.items())), goal="",
               anchor="")
    report.add(measure="read rate without writes", scenario=scenario,
               value=f"{no_w:,.0f} points/s", goal="", anchor="")
    report.add(measure="read rate with writes", scenario=scenario,
               value=f"{with_w:,.0f} points/s", goal="", anchor="")
    report.add(measure="read drop caused by writes",
               scenario=f"median of {len(busy)} paired windows of {window:g} s",
               value=f"{drop:.1%}", goal="< 5 %", anchor="")
    _report_steps(report, steps0, steps1, client.post_s)
    _report_cpu(report, cpu_quiet, cpu_busy, no_w, with_w, posted_per_s)  # per write posted
    report.add(measure="load average (1 / 5 min) at the end", scenario=f"{os.cpu_count()} CPUs",
               value=" / ".join(f"{x:.1f}" for x in os.getloadavg()[:2]), goal="", anchor="")


def _report_steps(
    report: Any, before: dict[str, float], after: dict[str, float], post_s: list[float]
) -> None:
    """Mean time of each step of a write (the sessions' ``writes_ms_*`` metrics)."""
    post = sorted(post_s)
    if post:
        report.add(measure="step: HTTP POST (root checks, request + audit append, nudge)",
                   scenario="bench client round trip",
                   value=f"p50 {1e3 * post[len(post) // 2]:.1f} / "
                         f"p99 {1e3 * post[int(len(post) * 0.99)]:.1f} ms",
                   goal="", anchor="")
    n = after.get("writes_ms_count", 0.0) - before.get("writes_ms_count", 0.0)
    for key, name in STEPS.items():
        ms = (after.get(f"writes_ms_{key}", 0.0) - before.get(f"writes_ms_{key}", 0.0))
        if n and ms:
            report.add(measure=f"step: {name}", scenario=f"mean of {n:.0f} writes",
                       value=f"{ms / n:.2f} ms", goal="", anchor="")


def _report_cpu(
    report: Any, quiet: dict[str, list[float]], busy: dict[str, list[float]],
    no_w: float, with_w: float, writes_per_s: float,
) -> None:
    """Each process's CPU in windows with and without writes, and per write."""
    for name in sorted(quiet.keys() & busy.keys()):
        q, b = statistics.median(quiet[name]), statistics.median(busy[name])
        if name.startswith("poll "):
            report.add(measure=POLL_PARTS[name], scenario="without / with writes",
                       value=f"{q:.1f} / {b:.1f} ms", goal="", anchor="")
            continue
        report.add(measure=f"CPU of the {name} process", scenario="without / with writes",
                   value=f"{100 * q:.0f} % / {100 * b:.0f} %", goal="", anchor="")
        if name == "devices" and no_w:
            # often CPU-bound: also count the reads it gave up, at its CPU per read
            cost = (b - q + (no_w - with_w) * q / no_w) / writes_per_s
            report.add(measure="CPU per write in the devices bulkhead",
                       scenario="extra CPU + reads given up x CPU per read",
                       value=f"{1e3 * cost:.2f} ms", goal="", anchor="")
            # the part the writes' own code took; the rest is reads lost otherwise
            # (a session waiting on its write, or a process starved of CPU)
            report.add(measure="CPU per write in the devices bulkhead, its own",
                       scenario="extra CPU / writes",
                       value=f"{1e3 * (b - q) / writes_per_s:.2f} ms", goal="", anchor="")
        elif name == "root":
            report.add(measure="CPU per write in the root", scenario="extra CPU / writes",
                       value=f"{1e3 * (b - q) / writes_per_s:.2f} ms", goal="", anchor="")


async def run(report: Any, args: Any) -> None:
    quick = getattr(args, "quick", False)
    # 6 s windows: a pair lasts 12 s, so the log's retention pass (every 10 s, a
    # scan that grows with the log: ~0.65 ms CPU per MB) does not land in the same
    # kind of window every time, as it did with 5 s windows
    window, rounds = (2.0, 6) if quick else (6.0, 12)
    report.progress(f"starting the Modbus simulator ({DEVICES} devices x {POINTS} points)")
    proc, port = await start_simulator(DEVICES)
    try:
        await anyio.to_thread.run_sync(_measure, report, port, proc.pid, window, rounds)
    finally:
        proc.terminate()
        with anyio.move_on_after(5):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
