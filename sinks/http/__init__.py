"""HTTP sink: batched JSON / NDJSON POST; config (here), actor and client (``actor``, ``client``)."""

from otgate.sinks.http.config import BodyFormat, HttpSink

__all__ = ["BodyFormat", "HttpSink"]
