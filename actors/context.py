"""What a config section's ``build()`` gets to construct its actor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otgate.actors.records import Reading

Publish = Callable[[list[Reading]], Awaitable[None]]
"""Write readings to the raw topics (by classification). Returns once the batch
is accepted by the durable log; waits while the log pushes back (it never drops
silently)."""


@dataclass
class BuildContext:
    """Resources shared by the actors of one bulkhead.

    ``publish`` writes readings to ``telemetry.raw`` / ``events.raw`` /
    ``alarms.raw``. ``log`` is the bulkhead's log backend (None where a
    bulkhead has no log, e.g. in unit tests). ``secrets`` resolves
    ``${secret:NAME}`` references already substituted at load time; it is
    here for sections that read secret files lazily.
    """

    gateway_id: str
    publish: Publish
    state_dir: Path
    log: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
