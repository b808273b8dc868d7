"""Config of the alert router sink (``[[sinks]] type = "alert_router"``)."""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from otgate.actors.records import AlarmSeverity
from otgate.config.base import Identifier, Port, PositiveSeconds, StrictStruct

if TYPE_CHECKING:
    from otgate.actors.context import BuildContext

Duration = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9]+(\.[0-9]+)?(ms|s|min|h)$",
        description="a duration: a number and a unit (ms, s, min, h), e.g. '5min', '30s'",
    ),
]
AlarmEvent = Literal[
    "raise", "clear", "ack", "shelve", "unshelve", "shelve_expired", "suppress", "unsuppress",
    "reset", "out_of_service", "return_to_service",
]
"""``Alarm.event``: what moved an alarm (actors/records.py)."""
_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|min|h)$")


def seconds(d: str) -> float:
    """A ``Duration`` in seconds (``"15min"`` → 900.0)."""
    m = _DURATION.match(d)
    if m is None:
        raise ValueError(f"not a duration: {d!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


class WebhookFormat(enum.Enum):
    """The body a webhook destination receives."""

    JSON = "json"
    """``{"kind", "key", "alarms": [Alarm...]}``: every field of every transition."""
    SLACK = "slack"
    """A Slack-compatible incoming-webhook body: ``{"text": ...}`` with one line per
    transition (Mattermost and Rocket.Chat accept the same)."""


class WebhookDestination(StrictStruct, tag="webhook", tag_field="type"):
    """An HTTP endpoint that receives one POST per notification."""

    id: Identifier
    "Destination id, as routes name it; also names its circuit breaker."
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    "URL to POST to; may hold a ${secret:NAME} (Slack webhook URLs are secrets); never logged."
    format: WebhookFormat = WebhookFormat.JSON
    "Body shape: 'json' (generic) or 'slack'."
    headers: dict[str, str] = {}
    "Extra request headers (e.g. Authorization = \"Bearer ${secret:hook_token}\"); never logged."
    timeout_s: PositiveSeconds = 10.0
    "Whole-request timeout; a timeout is retried."


class TlsMode(enum.Enum):
    """How the SMTP connection is protected."""

    STARTTLS = "starttls"
    """Plain connect, then STARTTLS before logging in (port 587); refused if the
    server does not offer it."""
    TLS = "tls"
    """TLS from the first byte (SMTPS, port 465)."""
    NONE = "none"
    """No encryption: only for a relay on the same host (credentials would travel
    in clear; refused together with a password)."""


class EmailDestination(StrictStruct, tag="email", tag_field="type", kw_only=True):
    """An SMTP server that receives one mail per notification."""

    id: Identifier
    "Destination id, as routes name it; also names its circuit breaker."
    host: str
    "SMTP server host."
    port: Port = 587
    "SMTP server port."
    tls: TlsMode = TlsMode.STARTTLS
    "Transport security."
    username: str = ""
    "Login name; empty = no login."
    password: str = ""
    "Login password: use ${secret:NAME}; never logged."
    ca_file: str = ""
    "PEM file of the CA that signed the server's certificate; empty = the system CAs."
    sender: str
    "From address."
    recipients: list[str]
    "To addresses (at least one)."
    subject_prefix: str = "[otgate]"
    "Put before every subject."
    timeout_s: PositiveSeconds = 30.0
    "Timeout of each SMTP step; a timeout is retried."

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ValueError("recipients: at least one address")
        if self.password and self.tls is TlsMode.NONE:
            raise ValueError("password: refused with tls = 'none' (it would travel in clear)")


Destination = WebhookDestination | EmailDestination


class Route(StrictStruct, kw_only=True):
    """Which alarms go where. Empty criteria match everything; a transition goes to
    the union of the destinations of every route it matches."""

    severity: AlarmSeverity | list[AlarmSeverity] = []
    "Severity or severities matched (CRITICAL, HIGH, MEDIUM, LOW, INFO)."
    assets: list[str] = []
    "asset_id patterns (shell style: 'pump-*')."
    areas: list[str] = []
    "Plant areas matched exactly."
    destinations: list[Identifier]
    "Destination ids notified of every matching transition."
    escalate_after: Duration | None = None
    "An alarm of this route still active and unacknowledged this long after its raise ..."
    escalate_to: list[Identifier] = []
    "... is notified once more to these destinations (the second route). Cancelled by an "
    "ack, a clear, a shelve or a suppression."

    @property
    def severities(self) -> list[AlarmSeverity]:
        return self.severity if isinstance(self.severity, list) else [self.severity]

    def __post_init__(self) -> None:
        if not self.destinations:
            raise ValueError("destinations: at least one destination id")
        if (self.escalate_after is None) != (not self.escalate_to):
            raise ValueError("escalate_after and escalate_to go together")


class AlertRouter(StrictStruct, tag="alert_router", tag_field="type"):
    """Notifies people of alarm transitions (``alarms.clean``) by webhook, Slack and mail."""

    id: Identifier
    "Sink id: names the actor and (by default) its consumer group."
    destinations: list[Destination]
    "Where notifications can go; each has its own circuit breaker."
    routes: list[Route]
    "Which transitions go to which destinations."
    topic: str = "alarms.clean"
    "The alarm journal to read."
    group: Identifier | None = None
    "Consumer group; default 'sink.<id>'."
    events: list[AlarmEvent] = msgspec.field(default_factory=lambda: ["raise", "ack", "clear", "reset"])
    "Transitions that notify. An alarm back from shelving, suppression or out-of-service "
    "while active and unacknowledged notifies like a raise. A transition into SHELVED, "
    "SUPPRESSED or OUT_OF_SERVICE never notifies."
    dedupe_window: Duration = "5min"
    "A raise of the same (asset, alarm) within this time of the last notified raise is not "
    "notified, nor are the later transitions of that activation ('0s' = off)."
    digest_severities: list[AlarmSeverity] = msgspec.field(
        default_factory=lambda: [AlarmSeverity.LOW, AlarmSeverity.INFO]
    )
    "Severities collected into a digest instead of being sent one by one."
    digest_interval: Duration = "15min"
    "A digest goes out this long after its first transition: one message per destination."
    max_pending: Annotated[int, msgspec.Meta(ge=10, le=1_000_000)] = 10_000
    "Notifications waiting for a destination at most; when full the router stops reading "
    "(the log keeps the alarms)."
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    "Alarm transitions read per batch at most."
    fetch_timeout_s: PositiveSeconds = 0.2
    "How long an idle router waits for transitions; also the resolution of its timers."
    breaker_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    "Consecutive failed sends that open a destination's circuit breaker."
    breaker_cooldown_s: PositiveSeconds = 10.0
    "How long an open breaker waits before one trial send."
    retry_initial_s: PositiveSeconds = 0.5
    "Delay before a destination is tried again after a failed send; doubles per failure."
    retry_max_s: PositiveSeconds = 30.0
    "Upper bound of that delay."
    dlq_topic: str = "dlq.events"
    "Where transitions a destination refuses for good go (reason, source offset)."

    def __post_init__(self) -> None:
        ids = [d.id for d in self.destinations]
        if len(set(ids)) != len(ids):
            raise ValueError("destinations: ids must be unique")
        if not self.routes:
            raise ValueError("routes: at least one route")
        for i, r in enumerate(self.routes):
            for name in [*r.destinations, *r.escalate_to]:
                if name not in ids:
                    raise ValueError(f"routes[{i}]: no destination has the id {name!r}")
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError("retry_initial_s must be <= retry_max_s")
        from otgate.actors.log.topics import record_type
        from otgate.actors.records import Alarm

        if record_type(self.topic) is not Alarm:
            raise ValueError(f"topic: {self.topic!r} does not carry Alarm records")

    @property
    def consumer_group(self) -> str:
        return self.group or f"sink.{self.id}"

    def build(self, ctx: BuildContext) -> Any:
        """The router actor; needs ``ctx.log`` and a codec (see ``stage_codec``);
        keeps its timers in ``<state_dir>/alert_router.<id>.json``."""
        from otgate.actors.stage_codec import stage_codec
        from otgate.sinks.alert_router.actor import AlertRouterActor

        if ctx.log is None:
            raise ValueError(f"sink {self.id}: no log in this bulkhead")
        return AlertRouterActor(
            f"sink.{self.id}", self, ctx.log, stage_codec(ctx),
            checkpoint=ctx.state_dir / f"alert_router.{self.id}.json", gateway_id=ctx.gateway_id,
        )
