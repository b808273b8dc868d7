"""What a supervisor keeps per child, and the events its loop handles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from otgate.actors.actor import LastError
from otgate.actors.messages import State
from otgate.supervisors.intensity import RestartIntensity
from otgate.supervisors.spec import ChildSpec


@dataclass
class ChildExit:
    child_id: str
    generation: int
    error: BaseException | None
    stopped: bool


@dataclass
class RestartDue:
    ids: list[str]
    generations: dict[str, int]


@dataclass
class OperatorRequest:
    """Operator/reload requests, handled in order by the supervisor loop."""

    action: str  # "restart" | "apply"
    child_id: str = ""
    specs: list[ChildSpec] = field(default_factory=list)
    done: anyio.Event = field(default_factory=anyio.Event)
    result: str = ""
    error: Exception | None = None


class SupervisorStopped(Exception):
    """The supervisor is not running (stopped or failed); the request was not done."""


@dataclass(eq=False)
class ChildRun:
    """One generation of a child: its own scope and events, so a late end of
    an old generation can never be mistaken for the end of the new one."""

    scope: anyio.CancelScope = field(default_factory=lambda: anyio.CancelScope(shield=True))
    ready: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    fail_reason: BaseException | None = None


@dataclass(eq=False)
class ChildRecord:
    spec: ChildSpec
    intensity: RestartIntensity
    kind: str = "actor"
    obj: Any = None
    generation: int = 0
    state: State = State.STOPPED
    restarts: int = 0
    run: ChildRun | None = None
    finished: bool = False  # ended normally and, by its restart type, stays stopped
    last_error = LastError()  # why it last exited abnormally (not a dataclass field)


class ReadySignal:
    """A ``task_status`` that sets an event: the readiness handshake."""

    def __init__(self, event: anyio.Event) -> None:
        self._event = event

    def started(self, value: object = None) -> None:
        self._event.set()
