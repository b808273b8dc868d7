"""Config of the S3 / Parquet archive sink (``[[sinks]] type = "s3"``)."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from otgate.config.base import PositiveSeconds
from otgate.sinks.config import LogSinkConfig


class ParquetCompression(enum.Enum):
    """Compression of the Parquet column chunks."""

    SNAPPY = "snappy"
    """Fast, moderate ratio (the Parquet default)."""
    ZSTD = "zstd"
    """Better ratio for a little more CPU (fewer bytes over a metered uplink)."""
    NONE = "none"


class S3Sink(LogSinkConfig, tag="s3", tag_field="type", kw_only=True):
    """Archives log topics as Parquet objects in an S3 bucket, at-least-once.

    One file holds one batch's records of one topic, log partition and hour
    (``<prefix><topic>/date=YYYY-MM-DD/hour=HH/<gateway>-p<partition>-<first offset>.parquet``,
    the hour of the record's log time, UTC). A batch — a rolled file — closes at
    ``batch_size`` records, ``batch_bytes`` bytes or ``batch_wait_s`` seconds,
    whichever comes first; it is held in memory until uploaded.
    """

    bucket: Annotated[str, msgspec.Meta(min_length=3, max_length=63)]
    "Bucket name (must exist)."
    prefix: str = "otgate/"
    "Key prefix of every object (e.g. 'site1/')."
    endpoint: str = ""
    "S3 endpoint URL for non-AWS stores (MinIO, Ceph, ...); empty = AWS for region."
    region: str = "us-east-1"
    "Region of the bucket."
    access_key_id: str = ""
    "Access key id; use a ${secret:NAME} reference; empty = the environment's credentials."
    secret_access_key: str = ""
    "Secret access key; use a ${secret:NAME} reference; never logged."
    allow_http: bool = False
    "Allow a plain-http endpoint (only for a store on the same host or a trusted LAN)."
    compression: ParquetCompression = ParquetCompression.ZSTD
    "Parquet compression."
    timeout_s: PositiveSeconds = 60.0
    "Timeout of one upload (a timed-out upload is retried; it never leaves a partial object)."
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 500_000
    "Records per file at most."
    batch_bytes: Annotated[int, msgspec.Meta(ge=0)] = 32 * 1024 * 1024
    "A file rolls once its records (as stored in the log) reach this many bytes."
    batch_wait_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    "A file rolls this long after its first record (the seeds' 5 minutes)."

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError("access_key_id and secret_access_key go together")
        if self.endpoint.startswith("http://") and not self.allow_http:
            raise ValueError("endpoint is http://: set allow_http = true to permit it")

    def destination(self) -> str:
        """Where the objects go, for logs and /health (no credentials)."""
        return f"s3://{self.bucket}/{self.prefix}"

    def actor_class(self) -> type:
        from otgate.sinks.s3.actor import S3SinkActor

        return S3SinkActor
