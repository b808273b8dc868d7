"""The restart policy: strategies, restart types, intensity, backoff, escalation."""

from __future__ import annotations

import anyio
import pytest
from fakes import Counter, CrashingSession, FinishingActor, TickingActor, wait_until

from otgate.actors.messages import State
from otgate.supervisors.intensity import RestartIntensity, backoff_delay
from otgate.supervisors.spec import (
    ChildSpec,
    OnExhausted,
    Restart,
    Strategy,
    SupervisorFlags,
)
from otgate.supervisors.supervisor import Supervisor, SupervisorFailed

pytestmark = pytest.mark.anyio
FAST = dict(backoff_initial=0.001, backoff_max=0.002, jitter=0.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_intensity_window_with_fake_clock() -> None:
    clock = FakeClock()
    window = RestartIntensity(intensity=3, period=10.0, clock=clock)
    assert [window.record() for _ in range(3)] == [True, True, True]
    assert window.record() is False  # 4th within 10 s
    clock.now = 10.5  # the first four fall out of the window
    assert window.record() is True
    assert window.recent() == 1


def test_backoff_doubles_caps_and_jitters() -> None:
    assert backoff_delay(1, 0.1, 5.0, 0.0) == pytest.approx(0.1)
    assert backoff_delay(4, 0.1, 5.0, 0.0) == pytest.approx(0.8)
    assert backoff_delay(20, 0.1, 5.0, 0.0) == pytest.approx(5.0)
    assert backoff_delay(4, 0.1, 5.0, 0.5, rng=lambda: 1.0) == pytest.approx(0.4)
    assert backoff_delay(0, 0.1, 5.0, 0.5) == 0.0


def _specs(counter: Counter, crashing: str, names=("a", "b", "c"), restart=Restart.PERMANENT):
    def make(name: str):
        if name == crashing:
            return lambda: CrashingSession(name, counter, crash_after=1)
        return lambda: TickingActor(name, counter)

    return [ChildSpec(id=n, start=make(n), restart=restart) for n in names]


@pytest.mark.parametrize(
    ("strategy", "crash", "restarted_with_it"),
    [
        (Strategy.ONE_FOR_ONE, "b", set()),
        (Strategy.REST_FOR_ONE, "b", {"c"}),
        (Strategy.ONE_FOR_ALL, "b", {"a", "c"}),
    ],
)
async def test_strategy_restarts_the_right_siblings(strategy, crash, restarted_with_it) -> None:
    counter = Counter()
    flags = SupervisorFlags(strategy=strategy, intensity=1000, period=60, **FAST)
    sup = Supervisor("root", _specs(counter, crash), flags)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await wait_until(lambda: counter.starts.get(crash, 0) >= 5)
        tg.cancel_scope.cancel()
    for name in {"a", "b", "c"} - {crash}:
        if name in restarted_with_it:
            assert counter.starts[name] >= 3, (name, counter.starts)
        else:
            assert counter.starts[name] == 1, (name, counter.starts)


async def test_crashing_actor_does_not_stop_siblings() -> None:
    counter = Counter()
    flags = SupervisorFlags(intensity=1000, period=60, **FAST)
    sup = Supervisor("root", _specs(counter, "b"), flags)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        before = counter.ticks.get("a", 0)
        await wait_until(lambda: counter.starts.get("b", 0) >= 10)
        await wait_until(lambda: counter.ticks["a"] > before + 3)
        assert counter.starts["a"] == 1
        snap = sup.snapshot()
        b = next(c for c in snap.children if c.id == "b")
        assert b.restarts >= 9 and "crashed" in (b.last_error or "")
        tg.cancel_scope.cancel()


async def test_transient_restarts_only_after_abnormal_exit() -> None:
    counter = Counter()
    specs = [
        ChildSpec(
            id="done", start=lambda: FinishingActor("done", counter), restart=Restart.TRANSIENT
        ),
        ChildSpec(
            id="crash",
            start=lambda: CrashingSession("crash", counter),
            restart=Restart.TRANSIENT,
        ),
    ]
    sup = Supervisor("root", specs, SupervisorFlags(intensity=1000, **FAST))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await wait_until(lambda: counter.starts.get("crash", 0) >= 3)
        assert counter.starts["done"] == 1
        states = {c.id: c.state for c in sup.snapshot().children}
        assert states["done"] is State.STOPPED
        tg.cancel_scope.cancel()


async def test_temporary_child_is_removed() -> None:
    counter = Counter()
    specs = [
        ChildSpec(id="t", start=lambda: CrashingSession("t", counter), restart=Restart.TEMPORARY),
        ChildSpec(id="a", start=lambda: TickingActor("a", counter)),
    ]
    sup = Supervisor("root", specs, SupervisorFlags(**FAST))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await wait_until(lambda: sup.child_ids() == ["a"])
        assert counter.starts["t"] == 1
        tg.cancel_scope.cancel()


async def test_escalation_stops_children_and_raises() -> None:
    counter = Counter()
    flags = SupervisorFlags(intensity=3, period=60, **FAST)
    sup = Supervisor("bulkhead", _specs(counter, "b"), flags)
    with pytest.raises(BaseException) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await anyio.sleep_forever()
    assert (
        info.group_contains(SupervisorFailed)
        if isinstance(info.value, BaseExceptionGroup)
        else isinstance(info.value, SupervisorFailed)
    )
    assert counter.starts["b"] == 4  # first start + 3 restarts, then over intensity
    assert sup.state is State.FAILED
    assert all(c.state in (State.STOPPED, State.FAILED) for c in sup.snapshot().children)


async def test_fail_child_keeps_siblings_running_and_operator_clears_it() -> None:
    counter = Counter()
    flags = SupervisorFlags(intensity=2, period=60, on_exhausted=OnExhausted.FAIL_CHILD, **FAST)
    sup = Supervisor("gateway", _specs(counter, "b"), flags)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await wait_until(
            lambda: next(c for c in sup.snapshot().children if c.id == "b").state is State.FAILED
        )
        assert counter.starts["b"] == 3
        ticks = counter.ticks["a"]
        await wait_until(lambda: counter.ticks["a"] > ticks + 5)
        assert sup.state is State.RUNNING and not sup.ready()
        await sup.restart_child("b")
        assert counter.starts["b"] == 4
        tg.cancel_scope.cancel()


async def test_intensity_with_fake_clock_allows_spread_out_restarts() -> None:
    clock = FakeClock()
    counter = Counter()
    flags = SupervisorFlags(intensity=2, period=10, **FAST)
    sup = Supervisor("root", _specs(counter, "b", names=("b",)), flags, clock=clock)

    async def advance() -> None:
        # every crash happens "11 s" after the previous one: never over intensity
        while True:
            clock.now += 11
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as tg:
        tg.start_soon(advance)
        await tg.start(sup.run)
        await wait_until(lambda: counter.starts.get("b", 0) >= 8)
        assert sup.state is State.RUNNING
        tg.cancel_scope.cancel()


async def test_hot_reload_restarts_only_changed_children() -> None:
    counter = Counter()

    def spec(name: str, digest: str) -> ChildSpec:
        return ChildSpec(id=name, start=lambda: TickingActor(name, counter), config_digest=digest)

    sup = Supervisor("root", [spec("a", "1"), spec("b", "1"), spec("c", "1")], SupervisorFlags())
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        result = await sup.apply([spec("a", "1"), spec("b", "2"), spec("d", "1")])
        assert result == "added=1 changed=1 removed=1 unchanged=1 cleared=0"
        assert counter.starts == {"a": 1, "b": 2, "c": 1, "d": 1}
        assert sup.child_ids() == ["a", "b", "d"]
        assert sup.ready()
        tg.cancel_scope.cancel()


async def test_stop_is_leaves_first_and_bounded() -> None:
    order: list[str] = []

    class Recording(TickingActor):
        async def teardown(self) -> None:
            order.append(self.id)

    counter = Counter()
    specs = [ChildSpec(id=n, start=lambda n=n: Recording(n, counter)) for n in ("x", "y", "z")]
    sup = Supervisor("root", specs, SupervisorFlags())
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        tg.cancel_scope.cancel()
    assert order == ["z", "y", "x"]


async def test_stop_during_start_reaches_children_not_yet_running() -> None:
    counter = Counter()

    class SlowStart(TickingActor):
        async def setup(self) -> None:
            await anyio.sleep(0.05)
            await super().setup()

    specs = [ChildSpec(id=n, start=lambda n=n: SlowStart(n, counter)) for n in ("x", "y")]
    sup = Supervisor("root", specs, SupervisorFlags())
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            await anyio.sleep(0.01)  # x is starting, y not scheduled yet
            tg.cancel_scope.cancel()
    assert sup.state is State.STOPPED


async def test_a_late_old_generation_never_ends_the_new_one() -> None:
    counter = Counter()
    stops: list[int] = []

    class SlowStop(TickingActor):
        async def teardown(self) -> None:
            stops.append(id(self))
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.3)  # longer than the supervisor waits (shutdown + 5)

    spec = ChildSpec(id="a", start=lambda: SlowStop("a", counter), shutdown=-4.9)
    sup = Supervisor("root", [spec], SupervisorFlags())
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await sup.restart_child("a")  # the old one is still tearing down
            await anyio.sleep(0.5)  # ... and finishes now
            assert sup.snapshot().children[0].state is State.RUNNING
            tg.cancel_scope.cancel()
    assert len(stops) == 2  # the new generation was stopped too: nothing orphaned


async def test_operator_requests_for_unknown_children_or_after_stop_fail_cleanly() -> None:
    from otgate.supervisors.supervisor import SupervisorStopped

    counter = Counter()
    sup = Supervisor("root", _specs(counter, crashing="", names=("a",)), SupervisorFlags())
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        with pytest.raises(KeyError):
            await sup.restart_child("nope")
        assert sup.state is State.RUNNING  # the loop survived
        tg.cancel_scope.cancel()
    with anyio.fail_after(1), pytest.raises(SupervisorStopped):
        await sup.restart_child("a")


async def test_finished_transient_child_does_not_block_readiness() -> None:
    counter = Counter()
    specs = [
        ChildSpec(id="t", start=lambda: FinishingActor("t", counter), restart=Restart.TRANSIENT),
        ChildSpec(id="a", start=lambda: TickingActor("a", counter)),
    ]
    sup = Supervisor("root", specs, SupervisorFlags())
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await wait_until(lambda: sup.snapshot().children[0].state is State.STOPPED)
        assert sup.ready()
        tg.cancel_scope.cancel()


async def test_reload_clears_a_failed_child_even_if_unchanged() -> None:
    counter = Counter()
    flags = SupervisorFlags(intensity=1, period=60, on_exhausted=OnExhausted.FAIL_CHILD, **FAST)
    specs = _specs(counter, "b", names=("a", "b"))
    sup = Supervisor("gateway", specs, flags)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await wait_until(lambda: sup.snapshot().children[1].state is State.FAILED)
        starts = counter.starts["b"]
        result = await sup.apply(specs)
        assert result.endswith("cleared=1") and counter.starts["b"] == starts + 1
        assert counter.starts["a"] == 1
        tg.cancel_scope.cancel()


async def test_one_for_all_counts_one_restart_per_cycle() -> None:
    counter = Counter()
    flags = SupervisorFlags(strategy=Strategy.ONE_FOR_ALL, intensity=1000, period=60, **FAST)
    specs = [
        ChildSpec(id=n, start=lambda n=n: CrashingSession(n, counter, crash_after=1))
        for n in ("a", "b")
    ]
    sup = Supervisor("root", specs, flags)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await wait_until(lambda: counter.starts.get("a", 0) >= 20)
        tg.cancel_scope.cancel()
    cycles = counter.starts["a"] - 1
    recorded = sup._shared_intensity.recent()
    assert recorded <= cycles + 1, (recorded, cycles)


async def test_a_slow_start_does_not_hold_back_a_siblings_restart() -> None:
    counter = Counter()

    class SlowStart(TickingActor):
        async def setup(self) -> None:
            await anyio.sleep(1.0)
            await super().setup()

    specs = [
        ChildSpec(id="b", start=lambda: CrashingSession("b", counter, crash_after=1)),
        ChildSpec(id="slow", start=lambda: SlowStart("slow", counter)),
    ]
    sup = Supervisor("root", specs, SupervisorFlags(intensity=1000, period=60, **FAST))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)  # returns once slow is ready, ~1 s in
        assert counter.starts["slow"] == 1
        assert counter.starts["b"] >= 5  # b kept restarting while slow was starting
        tg.cancel_scope.cancel()
