"""Config of one MQTT broker connection: subscriptions and their payload mappings."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from otgate.actors.records import Classification
from otgate.config.base import Identifier, Port, PositiveSeconds, StrictStruct

if TYPE_CHECKING:
    from otgate.actors.actor import Actor
    from otgate.actors.context import BuildContext

TopicLevel = Annotated[int, msgspec.Meta(ge=0, le=63, description="0-based topic level index")]
ClientId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class PayloadFormat(enum.Enum):
    """How a message body is decoded."""

    JSON = "json"
    """A JSON object; ``fields`` pick values by path."""
    PLAIN = "plain"
    """The whole body is one value (``42``, ``21.5``, ``true``, ``on``)."""


class ValueType(enum.Enum):
    """What a mapped value must be; anything else is a BAD reading ("wrong_type")."""

    NUMBER = "number"
    """int or float (JSON numbers; plain text parsed as a number)."""
    BOOL = "bool"
    """JSON true/false; plain ``true/false/1/0/on/off``."""
    STRING = "string"
    """Any JSON string; plain text as is."""
    ANY = "any"
    """Number, bool or string, whichever the payload carries."""


class TimeFormat(enum.Enum):
    """Encoding of the device timestamp found at ``time_path``."""

    EPOCH_S = "epoch_s"
    EPOCH_MS = "epoch_ms"
    EPOCH_NS = "epoch_ns"
    ISO8601 = "iso8601"


class AckPolicy(enum.Enum):
    """When a QoS 1 message is acknowledged to the broker."""

    AFTER_LOG = "after_log"
    """After its readings were accepted by the durable log: at-least-once end to end
    (a crash before that makes the broker redeliver). The broker's in-flight window
    (mosquitto ``max_inflight_messages``, default 20) then bounds throughput."""
    ON_RECEIPT = "on_receipt"
    """As soon as the client reads it (paho's default): faster, but messages
    received and not yet in the log are lost if the gateway process dies."""


class MqttField(StrictStruct):
    """One value inside a JSON payload, mapped to one parameter."""

    path: Annotated[str, msgspec.Meta(min_length=1)]
    """Dotted path into the JSON object; digits index arrays (``sensors.0.value``)."""
    parameter: Identifier
    """Parameter name on the asset."""
    unit: str = ""
    """Engineering unit carried on every reading."""
    type: ValueType = ValueType.NUMBER
    """Expected value type; a mismatch gives a BAD reading."""
    classification: Classification = Classification.TELEMETRY
    """TELEMETRY (every message), EVENT or ALARM (both emitted on change only)."""


class MqttSubscription(StrictStruct):
    """One topic filter (wildcards allowed) and how its messages map to readings."""

    topic: Annotated[str, msgspec.Meta(min_length=1)]
    """Topic filter, e.g. ``plant/+/telemetry`` or ``site/line1/#``."""
    qos: Literal[0, 1] = 1
    """Subscription QoS: 0 at most once, 1 at least once (queued by the broker
    for a persistent session while disconnected)."""
    payload: PayloadFormat = PayloadFormat.JSON
    """json | plain."""
    asset_id: Identifier | None = None
    """Fixed asset id for every message of this subscription."""
    asset_from_topic: TopicLevel | None = None
    """Take the asset id from this topic level (0-based), e.g. 1 for ``plant/+/…``."""
    fields: list[MqttField] = []
    """JSON payloads: the values to extract."""
    parameter: Identifier | None = None
    """Plain payloads: the parameter name."""
    parameter_from_topic: TopicLevel | None = None
    """Plain payloads: take the parameter name from this topic level instead."""
    unit: str = ""
    """Plain payloads: engineering unit."""
    type: ValueType = ValueType.NUMBER
    """Plain payloads: expected value type."""
    classification: Classification = Classification.TELEMETRY
    """Plain payloads: TELEMETRY, EVENT or ALARM."""
    time_path: str | None = None
    """JSON payloads: path of the device timestamp (None = no device_time)."""
    time_format: TimeFormat = TimeFormat.EPOCH_MS
    """Encoding of the value at ``time_path``."""

    def __post_init__(self) -> None:
        levels = self.topic.split("/")
        for i, level in enumerate(levels):
            if "#" in level and (level != "#" or i != len(levels) - 1):
                raise ValueError(f"topic {self.topic!r}: '#' must be the whole last level")
            if "+" in level and level != "+":
                raise ValueError(f"topic {self.topic!r}: '+' must be a whole level")
        if (self.asset_id is None) == (self.asset_from_topic is None):
            raise ValueError("give exactly one of asset_id and asset_from_topic")
        for name in ("asset_from_topic", "parameter_from_topic"):
            index = getattr(self, name)
            if index is not None and levels[-1] != "#" and index >= len(levels):
                raise ValueError(f"{name}={index} is past the last level of {self.topic!r}")
        if self.payload is PayloadFormat.JSON:
            if not self.fields:
                raise ValueError("a json subscription needs at least one entry in fields")
            if self.parameter is not None or self.parameter_from_topic is not None:
                raise ValueError("parameter/parameter_from_topic are for plain payloads")
            names = [f.parameter for f in self.fields]
            if len(set(names)) != len(names):
                raise ValueError("fields map two paths to the same parameter")
        else:
            if self.fields:
                raise ValueError("fields are for json payloads; plain uses parameter")
            if (self.parameter is None) == (self.parameter_from_topic is None):
                raise ValueError("give exactly one of parameter and parameter_from_topic")
            if self.time_path is not None:
                raise ValueError("time_path needs a json payload")


class MqttTls(StrictStruct):
    """TLS towards the broker."""

    ca_file: str | None = None
    """CA bundle to verify the broker (None = the system store)."""
    cert_file: str | None = None
    """Client certificate (mutual TLS)."""
    key_file: str | None = None
    """Client private key (mutual TLS)."""
    verify_hostname: bool = True
    """Check the broker's certificate against ``host``."""

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")


class MqttSource(StrictStruct, tag="mqtt", tag_field="type"):
    """An MQTT broker read by one device-session actor."""

    id: Identifier
    """Adapter id (readings carry it as ``adapter_id``)."""
    subscriptions: list[MqttSubscription]
    """Topic filters and their mappings."""
    host: str = "127.0.0.1"
    """Broker host."""
    port: Port = 1883
    """Broker port."""
    client_id: ClientId | None = None
    """MQTT client id; stable so the broker can resume the session (default ``otgate-<id>``)."""
    clean_session: bool = False
    """False = persistent session: the broker keeps subscriptions and queues QoS 1
    messages while the gateway is away (lost only if the broker itself forgets)."""
    username: str | None = None
    """User name (None = anonymous)."""
    password: str | None = None
    """Password, normally ``${secret:NAME}`` (resolved at load time; never logged)."""
    ack: AckPolicy = AckPolicy.AFTER_LOG
    """after_log | on_receipt: when QoS 1 messages are acknowledged."""
    tls: MqttTls | None = None
    """TLS settings; None = plain TCP."""
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=65535)] = 30
    """MQTT keepalive; a dead broker is noticed after ~1.5x this."""
    connect_timeout_s: PositiveSeconds = 10.0
    """Timeout of connect and subscribe."""
    reconnect_min_s: PositiveSeconds = 0.5
    """First reconnect delay; doubles per failed attempt (with jitter)."""
    reconnect_max_s: PositiveSeconds = 30.0
    """Reconnect delay cap."""
    max_queued_messages: Annotated[int, msgspec.Meta(ge=100)] = 50_000
    """Messages buffered in the client while the log pushes back; past that the
    client discards new messages (QoS 1 ones were already acknowledged)."""
    batch_max: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    """Readings per ``publish`` call at most."""

    def __post_init__(self) -> None:
        if not self.subscriptions:
            raise ValueError("subscriptions must not be empty")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password must be given together")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must be <= reconnect_max_s")

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"otgate-{self.id}"

    def __repr__(self) -> str:
        # Keep the resolved secret out of logs and tracebacks.
        return f"MqttSource(id={self.id!r}, host={self.host!r}, port={self.port})"

    def build(self, ctx: BuildContext) -> Actor:
        """The device-session actor for this broker connection."""
        from otgate.protocols.mqtt.session import MqttSession

        return MqttSession(self, ctx)
