"""Child specs and supervisor flags: the restart policy as data (OTP's supervisor)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec


class Restart(enum.Enum):
    """When a child that exited is started again."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an abnormal exit (an exception)
    TEMPORARY = "temporary"  # never; the child is removed


class Strategy(enum.Enum):
    """Which siblings restart with a child that exited."""

    ONE_FOR_ONE = "one_for_one"  # only that child
    REST_FOR_ONE = "rest_for_one"  # that child and those started after it
    ONE_FOR_ALL = "one_for_all"  # every child


class OnExhausted(enum.Enum):
    """What a supervisor does when restarts exceed its intensity.

    ``escalate`` (OTP): stop every child, go FAILED and fail towards the parent.
    ``fail_child``: only the child over its own limit goes FAILED and stays
    stopped until an operator or a reload clears it; its siblings keep running.
    The gateway root uses ``fail_child`` so one bulkhead never stops the others.
    """

    ESCALATE = "escalate"
    FAIL_CHILD = "fail_child"


class SupervisorFlags(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a supervisor restarts its children."""

    strategy: Strategy = Strategy.ONE_FOR_ONE
    "Which siblings restart with a child that exited."
    intensity: Annotated[int, msgspec.Meta(ge=0)] = 5
    "Restarts allowed within ``period`` seconds before ``on_exhausted`` applies."
    period: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    "Sliding window, in seconds, over which restarts are counted."
    backoff_initial: Annotated[float, msgspec.Meta(ge=0)] = 0.05
    "Delay before the first restart, in seconds; doubles with each restart in the window."
    backoff_max: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    "Upper bound of the restart delay, in seconds."
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    "Random fraction (0..1) taken off each delay so restarts of siblings spread out."
    on_exhausted: OnExhausted = OnExhausted.ESCALATE
    "What happens when restarts exceed the intensity."

    def __post_init__(self) -> None:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial")


@dataclass(frozen=True)
class ChildSpec:
    """One child of a supervisor.

    ``start`` builds a fresh child object each time (an Actor, a nested
    Supervisor or a bulkhead handle: anything with ``run(task_status=...)``,
    ``snapshot()`` and an ``id``). ``shutdown`` bounds the child's cleanup when
    it is stopped; ``start_timeout`` bounds its readiness handshake.
    """

    id: str
    start: Callable[[], Any]
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0
    start_timeout: float = 30.0
    config_digest: str = ""
