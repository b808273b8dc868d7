"""Kafka replication sink: config (here), actor and client (``actor``, ``client``)."""

from otgate.sinks.kafka.config import KafkaSink, SaslMechanism, SecurityProtocol

__all__ = ["KafkaSink", "SaslMechanism", "SecurityProtocol"]
