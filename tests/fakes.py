"""Fake actors registered like real ones, for supervision tests."""

from __future__ import annotations

import anyio

from otgate.actors.actor import Actor


class Counter:
    """Shared counters a test can wait on."""

    def __init__(self) -> None:
        self.starts: dict[str, int] = {}
        self.ticks: dict[str, int] = {}

    def start(self, actor_id: str) -> None:
        self.starts[actor_id] = self.starts.get(actor_id, 0) + 1

    def tick(self, actor_id: str) -> None:
        self.ticks[actor_id] = self.ticks.get(actor_id, 0) + 1


class TickingActor(Actor):
    """Counts ticks; stands in for a healthy sibling."""

    kind = "fake"

    def __init__(self, actor_id: str, counter: Counter) -> None:
        super().__init__(actor_id)
        self.counter = counter

    async def setup(self) -> None:
        self.counter.start(self.id)

    async def main(self) -> None:
        while True:
            self.counter.tick(self.id)
            await anyio.sleep(0.005)


class CrashingSession(TickingActor):
    """Crashes after ``crash_after`` ticks, every time it is started."""

    def __init__(self, actor_id: str, counter: Counter, crash_after: int = 1) -> None:
        super().__init__(actor_id, counter)
        self.crash_after = crash_after

    async def main(self) -> None:
        for _ in range(self.crash_after):
            self.counter.tick(self.id)
            await anyio.sleep(0.001)
        raise RuntimeError(f"{self.id} crashed")


class FinishingActor(TickingActor):
    """Returns normally after one tick (a normal exit)."""

    async def main(self) -> None:
        self.counter.tick(self.id)


async def wait_until(predicate, timeout: float = 5.0, interval: float = 0.005) -> None:
    """Poll ``predicate`` until it is true or fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(interval)
