"""``otgate bench aggregator-memory``: the aggregator's RSS over device time, faster than real time.

Workload: the soak's processing load replayed into the aggregator's windows
(``Windows``, resolutions 1 s / 1 min / 1 h, max_samples 2048, 1 min and 1 h
persisted) in this process: 20 assets x 100 parameters at 2.5 Hz of device
time (5k readings/s), a checkpoint every 30 s of device time encoded and
written in a worker thread, as the actor does.
Device time starts 40 min into an hour, so the 1 h windows fill (2,048 values
after 13.7 min), run past max_samples, close at 20 min and new ones fill again.

Rows: every device minute, 30 s after a checkpoint, the process's RSS and its
peak (VmHWM) in MiB, and the open windows. ``--quick``: 5 assets, 22 min.
No log, no decoding: this is the windows' and checkpoints' share of the
processing bulkhead, not the bulkhead.
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from otgate.actors.aggregator import checkpoint
from otgate.actors.aggregator.windows import Windows
from otgate.actors.records import Reading

TITLE = "aggregator memory: RSS over device time (soak load replayed, checkpoints every 30 s)"

S = 1_000_000_000
HOUR0 = 1_699_999_200 * S  # an hour boundary


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return 0.0


async def run(report, args: argparse.Namespace) -> None:
    assets = [f"dev{i}" for i in range(5 if args.quick else 20)]
    params = [f"p{i}" for i in range(100)]
    minutes = 22 if args.quick else 36
    hz = 2.5
    clock = [0]
    w = Windows(["1s", "1min", "1h"], lateness_ns=2 * S, idle_timeout_s=10, max_samples=2048,
                persisted=frozenset({"1min", "1h"}), wall_ns=lambda: clock[0])
    tp = ("telemetry.clean", 0)
    step = int(S / hz)
    t0 = HOUR0 + 40 * 60 * S
    off = 0
    report.progress(f"{len(assets) * len(params)} streams, {minutes} min of device time")
    with tempfile.TemporaryDirectory() as d, ThreadPoolExecutor(1) as pool:
        path = Path(d) / "aggregator.ckpt"
        for k in range(int(minutes * 60 * hz)):
            t = clock[0] = t0 + k * step
            for a in assets:
                for j, p in enumerate(params):
                    w.add(Reading(asset_id=a, parameter=p, value=float((k * 7 + j) % 1000) / 10,
                                  device_time=t, gateway_time=t), tp, off)
                    off += 1
            w.closed()
            w.commit_offsets({tp: off})
            if k and k % int(30 * hz) == 0:
                # in a worker thread, as the actor; the windows left alone until it returns
                pool.submit(checkpoint.save_windows, path, w.high_water,
                            w.persisted_windows(), {tp: off}).result()
                w.checkpointed = {tp: off}
            if k % int(60 * hz) == int(30 * hz):
                report.add(device_min=round(k * step / 60 / S, 1),
                           rss_mib=round(_status_mib("VmRSS"), 1),
                           peak_mib=round(_status_mib("VmHWM"), 1), open_windows=w.open_count)
