"""The reload storm: SIGHUP after SIGHUP while the config file flips between
broken and valid versions, under load. The gateway must refuse every broken
file, apply every valid one (restarting only what changed), never roll back,
and lose nothing."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import anyio

from otgate.simulations.gateway_process import GatewayProcess
from otgate.simulations.harness.scenario import Fault
from otgate.simulations.report import Report

# One valid change that restarts one bulkhead (the sink's): a real reload, not a no-op.
CHANGE = ("breaker_cooldown_s = 1.0", "breaker_cooldown_s = 1.5")
ANSWER_WAIT_S = 10.0
OUTCOMES = ("reload_refused", "config_reloaded", "reload_failed", "reload_rolled_back")


def versions(original: str, count: int) -> list[tuple[str, bool]]:
    """The files of the storm, in order, with whether each is valid: broken ones
    (a TOML syntax error, an unknown option) alternate with valid ones (the
    change, the original); the last one is valid."""
    if CHANGE[0] not in original:
        raise ValueError(f"reload_storm: {CHANGE[0]!r} not in the gateway config")
    broken = [
        original + "\n[gateway\n",
        original.replace("[gateway]\n", "[gateway]\nno_such_option = 1\n", 1),
    ]
    valid = [original.replace(*CHANGE), original]
    out = [
        (valid[(i // 2) % 2], True) if i % 2 else (broken[(i // 2) % 2], False)
        for i in range(count)
    ]
    if not out[-1][1]:
        out[-1] = (original, True)
    return out


def outcomes(log_text: str) -> Counter[str]:
    """How the gateway answered reloads so far, from its JSON log lines."""
    seen: Counter[str] = Counter()
    for line in log_text.splitlines():
        if '"reload' not in line and '"config_reloaded' not in line:
            continue
        try:
            event = json.loads(line).get("event")
        except ValueError:
            continue
        if event in OUTCOMES:
            seen[event] += 1
    return seen


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".storm")
    tmp.write_text(text)
    os.replace(tmp, path)  # the gateway never reads half a file


async def _answered(gw: GatewayProcess, before: Counter[str], n: int, pace_s: float) -> None:
    """Wait ``pace_s``, and until the gateway answered ``n`` reloads (at most
    ``ANSWER_WAIT_S``). A reload reads the file when it gets the reload lock, so a
    file replaced before the previous SIGHUP's reload read it would be counted
    against the wrong version: the storm goes as fast as the gateway answers,
    never faster than ``pace_s`` per SIGHUP."""
    start = time.monotonic()
    while time.monotonic() - start < ANSWER_WAIT_S:
        if sum((outcomes(gw.log()) - before).values()) >= n:
            break
        await anyio.sleep(0.05)
    await anyio.sleep(max(0.0, pace_s - (time.monotonic() - start)))


async def reload_storm(fault: Fault, gw: GatewayProcess, report: Report) -> list[str]:
    """Run the storm; return what went wrong (empty when every reload was handled)."""
    original = gw.config.read_text()
    files = versions(original, fault.count)
    before = outcomes(gw.log())
    began = time.monotonic()
    try:
        for i, (text, _) in enumerate(files, 1):
            _write(gw.config, text)
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGHUP)
            await _answered(gw, before, i, fault.duration_s / fault.count)
    finally:
        _write(gw.config, original)
    took = time.monotonic() - began
    broken = sum(1 for _, ok in files if not ok)
    want = {"reload_refused": broken, "config_reloaded": len(files) - broken}
    deadline = time.monotonic() + 60
    while True:
        seen = outcomes(gw.log()) - before
        if sum(seen.values()) >= len(files) or time.monotonic() > deadline:
            break
        await anyio.sleep(0.2)
    report.progress(
        f"reload storm: {len(files)} SIGHUPs in {took:.1f} s; "
        + " ".join(f"{k}={seen.get(k, 0)}" for k in OUTCOMES)
    )
    problems = [
        f"reload storm: {k}={seen.get(k, 0)} (expected {n})"
        for k, n in want.items()
        if seen.get(k, 0) != n
    ]
    problems += [
        f"reload storm: {k}={seen[k]} (expected 0)"
        for k in ("reload_failed", "reload_rolled_back")
        if seen.get(k)
    ]
    with anyio.move_on_after(30):
        while not await anyio.to_thread.run_sync(gw.ready):
            await anyio.sleep(0.2)
        return problems
    return [*problems, "reload storm: gateway not ready 30 s after the storm"]
