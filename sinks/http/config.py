"""Config of the HTTP sink (``[[sinks]] type = "http"``): batches POSTed to a cloud endpoint."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from otgate.config.base import PositiveSeconds
from otgate.sinks.config import LogSinkConfig


class BodyFormat(enum.Enum):
    """How one batch is laid out in the request body."""

    JSON = "json"
    """One JSON object: ``{"gateway_id", "batch_id", "records": [...]}``."""
    NDJSON = "ndjson"
    """One JSON object per record and line (``application/x-ndjson``); the batch id
    travels only in the ``Idempotency-Key`` header."""


class HttpSink(LogSinkConfig, tag="http", tag_field="type", kw_only=True):
    """POSTs batches of log records as JSON to one URL, at-least-once.

    Each record goes out as ``{"topic", "partition", "offset", "key", "record"}``
    (``record`` is the decoded Struct), so the receiver can drop a record it
    already has by (gateway_id, topic, partition, offset); every batch carries an
    ``Idempotency-Key`` derived from its offsets, the same on every retry.
    """

    url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    "URL to POST to; may hold a ${secret:NAME}; never logged."
    format: BodyFormat = BodyFormat.JSON
    "Body layout: 'json' (one object per batch) or 'ndjson' (one line per record)."
    gzip: bool = True
    "Compress bodies (Content-Encoding: gzip)."
    gzip_level: Annotated[int, msgspec.Meta(ge=1, le=9)] = 1
    "gzip level: 1-3 compress with ISA-L (igzip levels 1-3; 1 is ~8x faster than zlib's "
    "level 1 and as small: the edge CPU is the scarce side), 4-9 with zlib at that level "
    "(a few % smaller bodies for 3-8x zlib level 1's CPU)."
    bearer_token: str = ""
    "Authorization: Bearer token; use a ${secret:NAME} reference; never logged."
    username: str = ""
    "Basic auth user name (with password); empty = no basic auth."
    password: str = ""
    "Basic auth password; use a ${secret:NAME} reference; never logged."
    headers: dict[str, str] = {}
    "Extra request headers; never logged."
    ca_file: str = ""
    "PEM file of the CA that signs the server certificate (https); empty = system CAs."
    timeout_s: PositiveSeconds = 30.0
    "Whole-request timeout; a timeout is retried with the same Idempotency-Key."
    retry_after_max_s: PositiveSeconds = 300.0
    "Longest Retry-After the sink honours; a longer one is cut to this."
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 2000
    "Records per request at most."
    batch_bytes: Annotated[int, msgspec.Meta(ge=0)] = 4 * 1024 * 1024
    "A batch closes once its records (as stored in the log) reach this many bytes."
    batch_wait_s: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    "How long a started batch waits for more records."

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bearer_token and self.username:
            raise ValueError("bearer_token and username/password: choose one")
        if bool(self.username) != bool(self.password):
            raise ValueError("username and password go together")

    def redacted_url(self) -> str:
        """Scheme, host and port only (paths and queries can hold tokens)."""
        from urllib.parse import urlsplit

        u = urlsplit(self.url)
        return f"{u.scheme}://{u.hostname}{f':{u.port}' if u.port else ''}"

    def destination(self) -> str:
        return self.redacted_url()

    def actor_class(self) -> type:
        from otgate.sinks.http.actor import HttpSinkActor

        return HttpSinkActor
