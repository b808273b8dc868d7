"""Config of one OPC UA source connection: endpoint, security, mode and its points."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated

import msgspec

from otgate.actors.records import Classification
from otgate.config.base import Identifier, PositiveSeconds, StrictStruct
from otgate.protocols.writes import WriteSpec

if TYPE_CHECKING:
    from otgate.actors.actor import Actor
    from otgate.actors.context import BuildContext

Milliseconds = Annotated[float, msgspec.Meta(ge=0, description="milliseconds, >= 0")]
QueueSize = Annotated[int, msgspec.Meta(ge=0, le=65535, description="0-65535")]


class Mode(enum.Enum):
    """How values are obtained from the server."""

    SUBSCRIPTION = "subscription"
    """Monitored items in one subscription; the server pushes changes."""
    POLLING = "polling"
    """Read every point each ``poll_interval_s``; changes between polls are lost."""
    AUTO = "auto"
    """Subscription, falling back to polling when the server refuses subscriptions."""


class DeadbandType(enum.Enum):
    """Data-change filter of one monitored item."""

    NONE = "none"
    """Every change is reported."""
    ABSOLUTE = "absolute"
    """Report when the value moved by more than ``deadband`` units."""
    PERCENT = "percent"
    """Report when it moved by ``deadband`` % of the EURange (server must know it)."""


class SecurityPolicy(enum.Enum):
    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"
    AES128_SHA256_RSAOAEP = "Aes128_Sha256_RsaOaep"
    AES256_SHA256_RSAPSS = "Aes256_Sha256_RsaPss"


class SecurityMode(enum.Enum):
    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class TimestampSource(enum.Enum):
    """Which OPC UA timestamp becomes ``device_time``."""

    SOURCE = "source"
    """SourceTimestamp, falling back to ServerTimestamp when the server sends none."""
    SERVER = "server"
    """ServerTimestamp only."""


class DisconnectPolicy(enum.Enum):
    """What the session emits when the connection is lost."""

    MARK_BAD = "mark_bad"
    """One BAD reading (value None) per point, so consumers see the outage."""
    SILENT = "silent"
    """Nothing; the session's DEGRADED state is the only sign."""


class OpcUaPoint(StrictStruct):
    """One OPC UA variable mapped to one asset parameter."""

    node_id: str
    """Node id in string form, e.g. ``ns=2;s=Line1.Temperature`` or ``ns=3;i=1001``."""
    asset_id: Identifier
    """Asset the value belongs to (the log key)."""
    parameter: Identifier
    """Parameter name within the asset."""
    unit: str = ""
    """Engineering unit carried on every reading."""
    classification: Classification = Classification.TELEMETRY
    """TELEMETRY (every sample), EVENT or ALARM (both emitted on change only)."""
    sampling_interval_ms: Milliseconds | None = None
    """Server sampling interval for this item; None = the source's default."""
    queue_size: QueueSize | None = None
    """Server-side queue of this item; None = the source's default."""
    deadband_type: DeadbandType = DeadbandType.NONE
    """Data-change filter (subscription mode only)."""
    deadband: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Deadband value: units (absolute) or percent of EURange (percent)."""
    writable: bool = False
    """Accept writes (``POST /points/{asset}/{parameter}/write``, ``otgate
    write``), as the node's DataType; the server still decides (AccessLevel)."""
    write: WriteSpec | None = None
    """Limits and role of writes (needs ``writable = true``)."""

    def __post_init__(self) -> None:
        if self.write is not None and not self.writable:
            raise ValueError("'write' needs writable = true")
        if self.deadband_type is DeadbandType.NONE and self.deadband:
            raise ValueError("deadband is set but deadband_type is 'none'")
        if self.deadband_type is DeadbandType.PERCENT and self.deadband > 100:
            raise ValueError("percent deadband must be <= 100")


class OpcUaSource(StrictStruct, tag="opcua", tag_field="type"):
    """An OPC UA server read by one device-session actor."""

    id: Identifier
    """Adapter id (readings carry it as ``adapter_id``)."""
    endpoint: Annotated[str, msgspec.Meta(pattern=r"^opc\.tcp://")]
    """Server endpoint URL, ``opc.tcp://host:port/path``."""
    points: list[OpcUaPoint]
    """The variables to read."""
    mode: Mode = Mode.AUTO
    """subscription | polling | auto (subscription with polling fallback)."""
    publishing_interval_ms: Annotated[float, msgspec.Meta(gt=0)] = 500.0
    """Subscription publishing interval."""
    sampling_interval_ms: Milliseconds = 250.0
    """Default sampling interval of monitored items (0 = fastest the server offers)."""
    queue_size: QueueSize = 10
    """Default server-side queue size of monitored items (values between publishes)."""
    client_queue_size: Annotated[int, msgspec.Meta(ge=100)] = 50_000
    """Notifications buffered in the client while the log pushes back; past that the
    oldest are dropped (``client_queue_high_water`` shows how close it came)."""
    poll_interval_s: PositiveSeconds = 1.0
    """Polling mode: seconds between reads of all points."""
    max_nodes_per_read: Annotated[int, msgspec.Meta(ge=1)] = 500
    """Polling mode: nodes per Read request."""
    timestamp: TimestampSource = TimestampSource.SOURCE
    """Which timestamp becomes ``device_time``."""
    security_policy: SecurityPolicy = SecurityPolicy.NONE
    """Security policy of the secure channel."""
    security_mode: SecurityMode = SecurityMode.NONE
    """Message security mode (None needs policy None; Sign/SignAndEncrypt need a policy)."""
    certificate: str | None = None
    """Client certificate (DER or PEM path); required with a security policy."""
    private_key: str | None = None
    """Client private key (PEM path); required with a security policy."""
    server_certificate: str | None = None
    """Pinned server certificate path; None = take it from the endpoint list."""
    application_uri: str = "urn:otgate:client"
    """Application URI; must match the client certificate's subjectAltName URI."""
    username: str | None = None
    """User name for UserName authentication (None = anonymous)."""
    password: str | None = None
    """Password, normally ``${secret:NAME}`` (resolved at load time; never logged)."""
    request_timeout_s: PositiveSeconds = 4.0
    """Timeout of each OPC UA request."""
    connect_timeout_s: PositiveSeconds = 10.0
    """Timeout of the whole connect (channel, session, subscription)."""
    session_timeout_s: PositiveSeconds = 60.0
    """Requested session timeout."""
    watchdog_interval_s: PositiveSeconds = 1.0
    """Seconds between liveness probes of the server."""
    reconnect_min_s: PositiveSeconds = 0.5
    """First reconnect delay; doubles per failed attempt (with jitter)."""
    reconnect_max_s: PositiveSeconds = 30.0
    """Reconnect delay cap."""
    on_disconnect: DisconnectPolicy = DisconnectPolicy.MARK_BAD
    """What to emit when the connection is lost."""
    batch_max: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    """Readings per ``publish`` call at most."""

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("points must not be empty")
        seen: set[tuple[str, str]] = set()
        for i, p in enumerate(self.points):
            key = (p.asset_id, p.parameter)
            if key in seen:
                raise ValueError(f"points[{i}]: duplicate asset_id/parameter {key}")
            seen.add(key)
        secure = self.security_policy is not SecurityPolicy.NONE
        if secure != (self.security_mode is not SecurityMode.NONE):
            raise ValueError("security_policy and security_mode must both be 'None' or both be set")
        if secure and (self.certificate is None or self.private_key is None):
            raise ValueError("a security policy needs certificate and private_key")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password must be given together")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must be <= reconnect_max_s")

    def __repr__(self) -> str:
        # Keep the resolved secret out of logs and tracebacks.
        return f"OpcUaSource(id={self.id!r}, endpoint={self.endpoint!r}, points={len(self.points)})"

    def build(self, ctx: BuildContext) -> Actor:
        """The device-session actor for this source."""
        from otgate.protocols.opcua.session import OpcUaSession

        return OpcUaSession(self, ctx)
