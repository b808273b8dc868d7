"""Circuit breaker: one test per transition, with a fake clock."""

from __future__ import annotations

import anyio
import pytest

from otgate.actors.breaker import Breaker, BreakerState, CircuitBreaker
from otgate.actors.messages import State


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(threshold: int = 3, cooldown: float = 5.0) -> tuple[Breaker, FakeClock]:
    clock = FakeClock()
    return Breaker(failure_threshold=threshold, cooldown_s=cooldown, clock=clock), clock


def test_closed_allows_and_success_resets_failures():
    b, _ = make()
    assert b.state is BreakerState.CLOSED and b.allow()
    b.record_failure("x")
    b.record_failure("x")
    b.record_success()
    b.record_failure("x")
    b.record_failure("x")
    assert b.state is BreakerState.CLOSED  # never 3 in a row


def test_closed_to_open_after_n_consecutive_failures():
    b, _ = make(threshold=3)
    for _ in range(3):
        assert b.allow()
        b.record_failure("conn refused")
    assert b.state is BreakerState.OPEN
    assert not b.allow()
    assert b.metrics()["breaker_state"] == 2.0
    assert b.metrics()["breaker_opened_total"] == 1.0
    assert b.transitions[-1].reason.startswith("3 consecutive failures")


def test_open_to_half_open_after_cooldown_only():
    b, clock = make(threshold=1, cooldown=5.0)
    b.record_failure("x")
    clock.t += 4.9
    assert not b.allow() and b.state is BreakerState.OPEN
    assert b.seconds_until_retry() == pytest.approx(0.1)
    clock.t += 0.1
    assert b.allow()
    assert b.state is BreakerState.HALF_OPEN
    assert not b.allow()  # one trial at a time


def test_half_open_to_closed_on_success():
    b, clock = make(threshold=1)
    b.record_failure("x")
    clock.t += 5
    assert b.allow()
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.consecutive_failures == 0
    assert [t.to_state for t in b.transitions] == [
        BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED,
    ]


def test_half_open_to_open_on_failure_restarts_cooldown():
    b, clock = make(threshold=2)
    b.record_failure("x")
    b.record_failure("x")
    clock.t += 5
    assert b.allow()
    b.record_failure("still down")
    assert b.state is BreakerState.OPEN and b.opened_total == 2
    clock.t += 4
    assert not b.allow()
    clock.t += 1
    assert b.allow() and b.state is BreakerState.HALF_OPEN


@pytest.mark.anyio
async def test_actor_waits_out_cooldown_and_reports_state():
    clock = FakeClock()
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)
        clock.t += s
        await anyio.lowlevel.checkpoint()

    cb = CircuitBreaker("pg.breaker", destination="pg", failure_threshold=1, cooldown_s=3.0,
                        clock=clock, sleep=fake_sleep)
    async with anyio.create_task_group() as tg:
        await tg.start(cb.run)
        assert cb.snapshot().state is State.RUNNING
        cb.record_failure("down")
        snap = cb.snapshot()
        assert snap.state is State.DEGRADED and snap.metrics["breaker_state"] == 2.0
        assert snap.last_error == "down"
        await cb.wait_allowed()
        assert sum(slept) == pytest.approx(3.0)
        assert cb.breaker_state is BreakerState.HALF_OPEN
        cb.record_success()
        assert cb.snapshot().state is State.RUNNING
        assert [t.to_state.value for t in cb.transitions()] == ["open", "half_open", "closed"]
        tg.cancel_scope.cancel()
