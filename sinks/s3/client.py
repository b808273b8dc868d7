"""Uploading one object to S3 (obstore, async), and which failures a retry can cure.

An object is one PUT of the whole file: S3 (and alocals3) store it
entirely or not at all, so an upload cut off by a crash, a timeout or the
store going away leaves no partial object. The client does not retry by
itself; the sink's loop retries the batch behind its circuit breaker.

Retriable (whitelist): obstore's ``GenericError`` (transport failures,
timeouts, 5xx answers), ``TimeoutError``, ``ConnectionError``. Anything
else (no such bucket, access denied, bad credentials) is a configuration
problem: it fails the actor, and the log keeps the data.
"""

from __future__ import annotations

import datetime
import time

import obstore
from obstore.exceptions import GenericError
from obstore.store import S3Store

from otgate.sinks.s3.config import S3Sink


def is_retriable(exc: BaseException) -> bool:
    return isinstance(exc, (GenericError, TimeoutError, ConnectionError))


class ArchiveClient:
    """One bucket (the store is built on first use; it opens connections lazily)."""

    def __init__(self, config: S3Sink) -> None:
        self.config = config
        self.store: S3Store | None = None
        self.uploads = 0
        self.uploaded_bytes = 0
        self.upload_s = 0.0  # wall seconds spent in PUTs (the store's share of a batch)
        self.uploading = False

    def _store(self) -> S3Store:
        if self.store is None:
            c = self.config
            extra = ({"access_key_id": c.access_key_id, "secret_access_key": c.secret_access_key}
                     if c.access_key_id else {})
            if c.endpoint:
                extra["endpoint"] = c.endpoint
            self.store = S3Store(
                c.bucket, region=c.region,
                client_options={"allow_http": c.allow_http, "timeout": f"{c.timeout_s}s",
                                "connect_timeout": f"{min(c.timeout_s, 10.0)}s"},
                retry_config={"max_retries": 0, "backoff": {},
                              "retry_timeout": datetime.timedelta(seconds=c.timeout_s)},
                **extra,
            )
        return self.store

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` in one PUT; returns once the store confirmed it."""
        self.uploading = True
        t0 = time.perf_counter()
        try:
            await obstore.put_async(self._store(), key, data, use_multipart=False)
        finally:
            self.uploading = False
            self.upload_s += time.perf_counter() - t0
        self.uploads += 1
        self.uploaded_bytes += len(data)
