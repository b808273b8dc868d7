"""Config of the Kafka replication sink (``[[sinks]] type = "kafka"``): log topics
copied to a remote Kafka-compatible cluster (the MirrorMaker role)."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from otgate.actors.log.config import Compression
from otgate.config.base import PositiveSeconds
from otgate.sinks.config import LogSinkConfig


class SecurityProtocol(enum.Enum):
    """How the connection to the remote brokers is protected."""

    PLAINTEXT = "PLAINTEXT"
    """No TLS, no login: only on a trusted network (a VPN to the central cluster)."""
    SSL = "SSL"
    """TLS (server verified with ca_file; client certificate when cert_file is set)."""
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    """SASL login without TLS: the password hash travels in clear (SCRAM) or the
    password itself (PLAIN); refused with PLAIN."""
    SASL_SSL = "SASL_SSL"
    """TLS plus SASL login (the usual for a cloud cluster)."""


class SaslMechanism(enum.Enum):
    """SASL login mechanism (SASL_* protocols)."""

    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"
    PLAIN = "PLAIN"


class KafkaSink(LogSinkConfig, tag="kafka", tag_field="type", kw_only=True):
    """Replicates log topics to a remote cluster, at-least-once, deduplicable.

    Keys, values (bytes as stored: Avro in the Confluent wire format, so the
    remote needs the same schema registry) and timestamps are kept; every
    record carries the headers ``otgate-gateway`` (gateway id) and
    ``otgate-source`` (``topic/partition/offset`` in the local log), so the
    remote side can drop a record sent twice. Records go to the remote
    partition of their key (Kafka's murmur2), so per-key order holds.
    """

    bootstrap_servers: list[str]
    "Remote brokers, host:port; at least one."
    topic_map: dict[str, str] = {}
    "Remote topic name per local topic; topics not named get topic_prefix + their name."
    topic_prefix: str = ""
    "Prefix of remote topic names (e.g. 'site1.'), for topics not in topic_map."
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    "Transport security and login."
    ca_file: str = ""
    "PEM file of the CA that signs the brokers' certificates (SSL, SASL_SSL); empty = system CAs."
    cert_file: str = ""
    "Client certificate (PEM) for mutual TLS; empty = none."
    key_file: str = ""
    "Private key of cert_file (PEM)."
    sasl_mechanism: SaslMechanism = SaslMechanism.SCRAM_SHA_512
    "SASL mechanism (SASL_* protocols)."
    sasl_username: str = ""
    "SASL user name."
    sasl_password: str = ""
    "SASL password; use a ${secret:NAME} reference; never logged."
    compression: Compression = Compression.ZSTD
    "Producer batch compression (zstd: gzip's ratio at about a quarter of its CPU; "
    "aiokafka's gzip is level 9, the costliest step of replication). Brokers before "
    "Kafka 2.1 need lz4, snappy or gzip."
    idempotence: bool = False
    "Idempotent producer (no broker-side duplicates on retry); needs a broker that "
    "supports it (tansu 0.6 does not). Duplicates are deduplicable by headers anyway."
    max_batch_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1024 * 1024
    "Largest producer batch per remote partition (bytes); a record larger than this "
    "is dead-lettered."
    request_timeout_s: PositiveSeconds = 30.0
    "How long one send waits for the remote's acks=all answer (or its metadata)."
    client_id: str = "otgate-replicator"
    "Client id the remote brokers see."
    batch_bytes: Annotated[int, msgspec.Meta(ge=0)] = 512 * 1024
    "A batch closes once its records reach this many bytes (keep <= max_batch_bytes, "
    "so one remote partition takes one producer batch)."
    batch_wait_s: Annotated[float, msgspec.Meta(ge=0)] = 0.05
    "How long a started batch waits for more records."

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.bootstrap_servers:
            raise ValueError("bootstrap_servers: at least one broker")
        sasl = self.security_protocol in (SecurityProtocol.SASL_SSL,
                                          SecurityProtocol.SASL_PLAINTEXT)
        if sasl and not (self.sasl_username and self.sasl_password):
            raise ValueError("SASL needs sasl_username and sasl_password")
        if (self.security_protocol is SecurityProtocol.SASL_PLAINTEXT
                and self.sasl_mechanism is SaslMechanism.PLAIN):
            raise ValueError("SASL PLAIN without TLS would send the password in clear")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")

    def remote_topic(self, topic: str) -> str:
        return self.topic_map.get(topic) or f"{self.topic_prefix}{topic}"

    def destination(self) -> str:
        return ",".join(self.bootstrap_servers)

    def actor_class(self) -> type:
        from otgate.sinks.kafka.actor import KafkaSinkActor

        return KafkaSinkActor
