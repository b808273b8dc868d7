"""The gateway's config tree: one TOML file decoded into these strict Structs."""

from __future__ import annotations

from typing import Annotated

import msgspec

from otgate.actors.log.config import LogConfig
from otgate.actors.processing import ProcessingConfig
from otgate.config.base import (
    Identifier,
    MiB,
    PositiveSeconds,
    StrictStruct,
)
from otgate.config.control_plane import ControlPlaneSection
from otgate.config.registry import AdapterConfig, SimulatorConfig, SinkConfig
from otgate.supervisors.spec import OnExhausted, SupervisorFlags

Listen = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):[0-9]{1,5}$",
        description="HOST:PORT (port 0 = ephemeral; IPv6 as [::1]:PORT)",
    ),
]


class GatewaySection(StrictStruct):
    """Identity, state and shutdown of this gateway."""

    id: Identifier = "otgate"
    """Gateway id, shown in /health and on every log line."""
    state_dir: str = ""
    """Where the log, caches and the last good config live. Empty: ``$STATE_DIRECTORY``
    (systemd StateDirectory=) or ``./state`` next to the config file."""
    secrets_dir: str = "/etc/otgate/secrets"
    """Directory searched for ``${secret:NAME}`` after ``$CREDENTIALS_DIRECTORY``."""
    shutdown_timeout: PositiveSeconds = 10.0
    """Seconds each bulkhead gets to stop cleanly on SIGTERM before it is killed."""
    fault_injection: bool = False
    """Accept fault-injection commands (hang, leak, crash) on the status endpoint.
    For test rigs and the ``otgate simulate`` harness; leave off in production."""


class Token(StrictStruct):
    """A bearer token for the status endpoint's mutating calls."""

    token: str
    """The token value; use a ``${secret:NAME}`` reference."""
    role: str = "viewer"
    """viewer | operator | engineer | admin."""
    name: str = ""
    """Who holds it, as the audit trail names the caller (default ``token<i>-<role>``)."""
    assets: list[str] = []
    """Limit the token to these assets (fnmatch patterns, e.g. ``"line-2-*"``): it sees
    and acts on their alarms and dead letters only, and cannot restart components.
    Empty: every asset."""

    def __post_init__(self) -> None:
        if self.role not in ("viewer", "operator", "engineer", "admin"):
            raise ValueError(f"role: expected viewer|operator|engineer|admin, got {self.role!r}")


class StatusSection(StrictStruct):
    """The HTTP status endpoint."""

    listen: Listen = "127.0.0.1:8787"
    """Address to listen on. Loopback by default: the endpoint is for the operator on
    this machine or a reverse proxy, not the plant network."""
    tokens: list[Token] = []
    """Tokens allowed to call mutating endpoints (restart, fault injection)."""

    def __post_init__(self) -> None:
        port = int(self.listen.rpartition(":")[2])
        if port > 65535:
            raise ValueError(f"listen: port {port} is over 65535")


class SupervisionSection(StrictStruct):
    """Restart policy of the gateway root and of the supervisors inside bulkheads."""

    gateway: SupervisorFlags = SupervisorFlags(
        intensity=5, period=60.0, backoff_initial=0.05, on_exhausted=OnExhausted.FAIL_CHILD
    )
    """The root: over its intensity a bulkhead goes FAILED; the others keep running
    (the root always uses ``on_exhausted = "fail_child"``, whatever is set here)."""
    bulkhead: SupervisorFlags = SupervisorFlags(intensity=10, period=60.0, backoff_initial=0.1)
    """Inside a bulkhead (device sessions, sinks...): over intensity the bulkhead fails."""
    heartbeat_interval: PositiveSeconds = 1.0
    """Seconds between a bulkhead's heartbeats."""
    heartbeat_timeout: PositiveSeconds = 3.0
    """A bulkhead silent this long is hung: it is killed and restarted. Time its
    loop spent waiting for a CPU (a loaded machine) does not count, up to 5x this
    of plain silence (``supervisors/bulkhead_silence.py``)."""
    start_timeout: PositiveSeconds = 30.0
    """A bulkhead must report started within this many seconds."""
    reload_grace_s: PositiveSeconds = 45.0
    """After a start or a reload, the tree must be ready within this many seconds:
    then the file is cached as last good; a reload that is not ready is rolled back."""

    def __post_init__(self) -> None:
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError("heartbeat_timeout must be longer than heartbeat_interval")


class BulkheadSection(StrictStruct):
    """A process bulkhead: which parts share one OS process, and its limits.

    Parts not named in any bulkhead each get their own process, named after
    the part's id.
    """

    id: Identifier
    """Bulkhead id."""
    members: list[str]
    """Ids of adapters/sinks that run in this process (e.g. one Modbus line)."""
    memory_limit_mib: MiB | None = None
    """Resident memory above which the supervisor kills and restarts the bulkhead."""
    address_space_limit_mib: MiB | None = None
    """RLIMIT_AS the process sets on itself: a backstop only (an idle one maps ~100 MiB)."""


class Defaults(StrictStruct):
    """Limits applied to bulkheads that set none themselves."""

    memory_limit_mib: MiB | None = 512
    """Default resident-memory limit per bulkhead."""


PROCESSING_ID = "processing"
AGGREGATION_ID = "aggregation"
"""The aggregator's part when ``[processing] aggregator_apart``."""
LOG_ID = "log"


class GatewayConfig(StrictStruct):
    """The whole gateway."""

    config_version: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Version of this config (a top-level key, before any table). A control plane
    sets it; a pulled config is applied only when its version is higher than the
    running one. Shown in /health."""
    gateway: GatewaySection = GatewaySection()
    status: StatusSection = StatusSection()
    supervision: SupervisionSection = SupervisionSection()
    log: LogConfig = LogConfig()
    defaults: Defaults = Defaults()
    adapters: list[AdapterConfig] = []
    """Device connections, one session actor each."""
    processing: ProcessingConfig | None = None
    """Validator and aggregator (``[processing]``); absent = raw topics only."""
    sinks: list[SinkConfig] = []
    """Destinations fed from the log, each with its own consumer group and breaker."""
    simulators: list[SimulatorConfig] = []
    """Simulated devices this gateway starts itself (demo plant, soak tests)."""
    bulkheads: list[BulkheadSection] = []
    """Process grouping and limits (optional)."""
    control_plane: ControlPlaneSection | None = None
    """Pull the config from a control plane (``[control_plane]``); absent = this file only."""

    def part_ids(self) -> list[str]:
        """Ids of every part that runs as an actor, simulators first (devices up
        before the sessions that read them)."""
        ids = [s.id for s in self.simulators] + [a.id for a in self.adapters]
        if self.processing is not None:
            ids.append(PROCESSING_ID)
            if self.processing.apart():
                ids.append(AGGREGATION_ID)
        return ids + [s.id for s in self.sinks]

    def __post_init__(self) -> None:
        ids = self.part_ids()
        first: dict[str, str] = {}
        sections = [
            ("simulators", self.simulators),
            ("adapters", self.adapters),
            ("sinks", self.sinks),
        ]
        for section, items in sections:
            for i, part in enumerate(items):
                where = f"{section}[{i}].id"
                if part.id == LOG_ID:
                    raise ValueError(f"{where}: {LOG_ID!r} is reserved for the log's bulkhead")
                if part.id in first:
                    raise ValueError(f"{where}: {part.id!r} is already used by {first[part.id]}")
                first[part.id] = where
        if self.processing is not None:
            names = {PROCESSING_ID: "the [processing] part",
                     AGGREGATION_ID: "the aggregator's part ([processing] aggregator_apart)"}
            for pid in ids:
                if pid in names and pid in first:
                    raise ValueError(f"{first[pid]}: {pid!r} names {names[pid]}")
        seen: dict[str, str] = {}
        bulkhead_ids: set[str] = set()
        for i, b in enumerate(self.bulkheads):
            if b.id in bulkhead_ids or b.id == LOG_ID:
                raise ValueError(f"bulkheads[{i}].id: {b.id!r} is used twice or reserved")
            if b.id in ids and b.id not in b.members:
                raise ValueError(
                    f"bulkheads[{i}].id: {b.id!r} is the id of a part outside this bulkhead"
                )
            bulkhead_ids.add(b.id)
            for j, m in enumerate(b.members):
                if m not in ids:
                    raise ValueError(f"bulkheads[{i}].members[{j}]: no part has the id {m!r}")
                if m in seen:
                    raise ValueError(f"bulkheads[{i}].members[{j}]: {m!r} is already in {seen[m]}")
                seen[m] = b.id
