"""Circuit breaker per sink destination: a pure state machine and the actor around it.

States: CLOSED (calls go through) → OPEN after ``failure_threshold``
consecutive failures (no calls; the sink stops consuming, so the log keeps
the data and the sink's lag grows) → HALF_OPEN once ``cooldown_s`` passed
(one trial call) → CLOSED on its success, or OPEN again (a new cooldown) on
its failure. Time comes from an injectable monotonic clock so every
transition is testable without sleeping.

The actor exposes the state and the transition history through
``metrics()`` / ``snapshot()`` (``/health`` and ``/metrics``). Nothing is
lost by an open breaker: it only gates when the sink may try again.
"""

from __future__ import annotations

import collections
import enum
import logging
import time
from collections.abc import Callable

import anyio
import msgspec

from otgate.actors.actor import Actor, LastError
from otgate.actors.messages import Snapshot, State

log = logging.getLogger("otgate.breaker")

Clock = Callable[[], float]


class BreakerState(enum.Enum):
    """Where the breaker is; the metric value is the enum's ``code``."""

    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"

    @property
    def code(self) -> int:
        return _CODES[self]


_CODES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """One state change, for ``/health``."""

    at_wall_ns: int
    from_state: BreakerState
    to_state: BreakerState
    reason: str


class Breaker:
    """The breaker state machine (no I/O, no tasks).

    Usage: ``if breaker.allow(): ...call...; breaker.record_success()`` or
    ``breaker.record_failure(err)``. ``allow()`` performs the OPEN → HALF_OPEN
    transition when the cooldown has passed. In HALF_OPEN only one trial call
    is allowed at a time.
    """

    last_error = LastError()

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 5.0,
        clock: Clock = time.monotonic,
        history: int = 32,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if cooldown_s <= 0:
            raise ValueError("cooldown_s must be > 0")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._changed_at = clock()
        self._trial_in_flight = False
        self.consecutive_failures = 0
        self.failures_total = 0
        self.successes_total = 0
        self.rejected_calls = 0
        self.opened_total = 0
        self.transitions_total = 0
        self.last_error = None
        self.transitions: collections.deque[Transition] = collections.deque(maxlen=history)
        self._on_transition = on_transition

    @property
    def state(self) -> BreakerState:
        """The current state, without moving OPEN → HALF_OPEN (``allow`` does that)."""
        return self._state

    def seconds_until_retry(self) -> float:
        """0 when a call may be tried now, else how long the cooldown still runs."""
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.cooldown_s - self._clock())
        return 0.0

    def seconds_in_state(self) -> float:
        return self._clock() - self._changed_at

    def allow(self) -> bool:
        """May a call be made now? Counts refused calls."""
        if self._state is BreakerState.OPEN:
            if self._clock() - self._opened_at >= self.cooldown_s:
                self._move(BreakerState.HALF_OPEN, "cooldown elapsed")
            else:
                self.rejected_calls += 1
                return False
        if self._state is BreakerState.HALF_OPEN:
            if self._trial_in_flight:
                self.rejected_calls += 1
                return False
            self._trial_in_flight = True
        return True

    def record_success(self) -> None:
        self.successes_total += 1
        self.consecutive_failures = 0
        self._trial_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._move(BreakerState.CLOSED, "trial call succeeded")

    def record_failure(self, error: str = "") -> None:
        self.failures_total += 1
        self.consecutive_failures += 1
        self._trial_in_flight = False
        if error:
            self.last_error = error
        if self._state is BreakerState.HALF_OPEN:
            self._open(f"trial call failed: {error}")
        elif (
            self._state is BreakerState.CLOSED
            and self.consecutive_failures >= self.failure_threshold
        ):
            self._open(f"{self.consecutive_failures} consecutive failures: {error}")

    def _open(self, reason: str) -> None:
        self._opened_at = self._clock()
        self.opened_total += 1
        self._move(BreakerState.OPEN, reason)

    def _move(self, to: BreakerState, reason: str) -> None:
        t = Transition(
            at_wall_ns=time.time_ns(), from_state=self._state, to_state=to, reason=reason
        )
        self._state = to
        self._changed_at = self._clock()
        self.transitions_total += 1
        self.transitions.append(t)
        if self._on_transition is not None:
            self._on_transition(t)

    def metrics(self) -> dict[str, float]:
        return {
            "breaker_state": float(self._state.code),
            "breaker_consecutive_failures": float(self.consecutive_failures),
            "breaker_failures_total": float(self.failures_total),
            "breaker_successes_total": float(self.successes_total),
            "breaker_rejected_calls_total": float(self.rejected_calls),
            "breaker_opened_total": float(self.opened_total),
            "breaker_transitions_total": float(self.transitions_total),
            "breaker_seconds_in_state": self.seconds_in_state(),
        }


class CircuitBreaker(Actor):
    """The breaker of one sink destination as an actor of the status tree.

    The sink calls ``await wait_allowed()`` before each write (it sleeps out an
    open breaker's cooldown, so the sink consumes nothing meanwhile) and then
    ``record_success()`` / ``record_failure()``. State: RUNNING while CLOSED,
    DEGRADED while OPEN or HALF_OPEN. Cancellation-safe: waiting holds nothing.
    """

    kind = "circuit_breaker"

    def __init__(
        self,
        actor_id: str,
        *,
        destination: str,
        failure_threshold: int = 5,
        cooldown_s: float = 5.0,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], object] = anyio.sleep,
    ) -> None:
        super().__init__(actor_id)
        self.destination = destination
        self._sleep = sleep
        self.core = Breaker(
            failure_threshold=failure_threshold,
            cooldown_s=cooldown_s,
            clock=clock,
            on_transition=self._log_transition,
        )
        self._changed = anyio.Event()

    def _log_transition(self, t: Transition) -> None:
        log.warning(
            "breaker_%s breaker_id=%s destination=%s from=%s reason=%s",
            t.to_state.value,
            self.id,
            self.destination,
            t.from_state.value,
            t.reason,
        )
        if self.state in (State.RUNNING, State.DEGRADED):
            self.state = State.RUNNING if t.to_state is BreakerState.CLOSED else State.DEGRADED
        self._changed.set()
        self._changed = anyio.Event()

    @property
    def breaker_state(self) -> BreakerState:
        return self.core.state

    async def wait_allowed(self) -> None:
        """Return once a call may be made (at once while CLOSED)."""
        while not self.core.allow():
            await self._sleep(max(self.core.seconds_until_retry(), 0.01))

    def record_success(self) -> None:
        self.core.record_success()

    def record_failure(self, error: str = "") -> None:
        self.core.record_failure(error)

    def metrics(self) -> dict[str, float]:
        return self.core.metrics()

    def snapshot(self) -> Snapshot:
        snap = super().snapshot()
        snap.last_error, snap.last_error_at = self.core.last_error, self.core.last_error_at
        return snap

    def transitions(self) -> list[Transition]:
        """The recent transitions, oldest first (bounded history)."""
        return list(self.core.transitions)
