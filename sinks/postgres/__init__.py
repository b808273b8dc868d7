"""PostgreSQL / TimescaleDB sink: config (here), actor and client (``actor``, ``client``)."""

from otgate.sinks.postgres.config import OnConflict, PostgresSink

__all__ = ["OnConflict", "PostgresSink"]
