"""Hang detection: silence less the time the loop waited for a CPU.

The process tests load one CPU for real (busy processes pinned to it beside
the watched process) and read the kernel's run-queue wait, so a busy loop
starved by the load is told apart from a loop that is really stuck.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from otgate.supervisors.bulkhead_silence import WALL_LIMIT, Silence, run_delay


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.waited: float | None = 0.0

    def __call__(self) -> float:
        return self.now


def test_silence_spent_waiting_for_a_cpu_is_not_a_hang() -> None:
    clock = Clock()
    s = Silence(2.0, lambda: clock.waited, clock)
    clock.now += 6.0
    clock.waited = 4.5  # 1.5 s of its own silence
    assert s.hung() is None
    clock.now += 1.0  # 2.5 s of its own
    assert "4.5s of it waiting for a CPU" in (s.hung() or "")
    s.beat()
    assert s.hung() is None and s.age() == 0.0


def test_plain_silence_is_judged_at_the_timeout() -> None:
    clock = Clock()
    s = Silence(2.0, lambda: clock.waited, clock)
    clock.now += 2.0
    assert s.hung() is None
    clock.now += 0.1
    assert s.hung() == "no heartbeat for 2.1s, 0.0s of it waiting for a CPU (limit 2s)"


def test_wall_limit_holds_however_long_it_waited() -> None:
    clock = Clock()
    s = Silence(2.0, lambda: clock.waited, clock)
    clock.now += WALL_LIMIT * 2.0 + 0.1
    clock.waited = WALL_LIMIT * 2.0
    assert (s.hung() or "").endswith(f"(limit {WALL_LIMIT * 2.0:g}s)")


def test_without_schedstat_the_silence_is_the_wall_time() -> None:
    clock = Clock()
    clock.waited = None
    s = Silence(2.0, lambda: clock.waited, clock)
    clock.now += 2.1
    assert s.hung() is not None


def test_a_stalled_gateway_excuses_the_silence_before_it() -> None:
    clock = Clock()
    s = Silence(2.0, lambda: clock.waited, clock)
    clock.now += 5.0
    s.excuse_until(clock.now - 0.25)
    assert s.hung() is None and s.age() == 0.25
    s.excuse_until(clock.now - 1.0)  # never moves back
    assert s.age() == 0.25


# -- a real process on a loaded CPU -------------------------------------------------

CHILD = """
import sys, time
print("beat", flush=True)
mode = sys.argv[1]
if mode == "busy":  # the loop busy for a moment (a checkpoint encode): 0.2 s of CPU
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    print("beat", flush=True)
    time.sleep(30)
elif mode == "spin":  # stuck in a loop for good
    while True:
        pass
else:  # stuck in a blocking call
    time.sleep(30)
"""


@contextmanager
def loaded_cpu(spinners: int) -> Iterator[int]:
    """``spinners`` busy processes pinned to one CPU; yields that CPU."""
    cpu = min(os.sched_getaffinity(0))
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(spinners)
    ]
    try:
        for p in procs:
            os.sched_setaffinity(p.pid, {cpu})
        yield cpu
    finally:
        for p in procs:
            p.kill()
            p.wait()


def watch(mode: str, cpu: int, timeout: float, limit_s: float) -> tuple[str | None, float, float]:
    """Run the child on ``cpu`` and judge it as the watchdog does until it beats
    twice, is found hung, or ``limit_s`` passes. Returns (verdict, longest silence
    between beats in wall time, seconds until the verdict)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE)
    try:
        os.sched_setaffinity(child.pid, {cpu})
        os.set_blocking(child.stdout.fileno(), False)
        assert child.stdout.readline() or _wait_line(child), "the child never started"
        s = Silence(timeout, lambda: run_delay(child.pid))
        start = time.monotonic()
        longest = 0.0
        while time.monotonic() - start < limit_s:
            time.sleep(0.05)
            longest = max(longest, s.age())
            if child.stdout.readline():
                return None, longest, time.monotonic() - start
            if why := s.hung():
                return why, longest, time.monotonic() - start
        return None, longest, limit_s
    finally:
        child.kill()
        child.wait()


def _wait_line(child: subprocess.Popen) -> bool:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if child.stdout.readline():
            return True
        time.sleep(0.01)
    return False


needs_schedstat = pytest.mark.skipif(
    run_delay(os.getpid()) is None, reason="kernel without /proc/<pid>/schedstat"
)


@needs_schedstat
def test_a_busy_loop_starved_by_a_loaded_cpu_is_not_hung() -> None:
    with loaded_cpu(5) as cpu:
        why, longest, _ = watch("busy", cpu, timeout=1.0, limit_s=10.0)
    assert why is None
    # it was silent longer than the timeout: wall time alone would have killed it
    assert longest > 1.0


@needs_schedstat
def test_a_loop_stuck_in_a_call_is_hung_at_the_timeout_even_on_a_loaded_cpu() -> None:
    with loaded_cpu(5) as cpu:
        why, _, after = watch("sleep", cpu, timeout=1.0, limit_s=10.0)
    assert why is not None and "no heartbeat" in why
    assert after < 2.0


@needs_schedstat
def test_a_spinning_loop_is_hung_on_a_loaded_cpu_too() -> None:
    with loaded_cpu(5) as cpu:
        why, _, after = watch("spin", cpu, timeout=1.0, limit_s=WALL_LIMIT + 3)
    assert why is not None
    assert after <= WALL_LIMIT + 0.5
