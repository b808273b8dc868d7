"""S3 / Parquet archive sink: config (here), Parquet layout, actor and client."""

from otgate.sinks.s3.config import ParquetCompression, S3Sink

__all__ = ["ParquetCompression", "S3Sink"]
