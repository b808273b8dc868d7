"""One POST of one batch, and which failures a retry can cure.

``post`` returns once the server answered 2xx, or raises ``HttpError`` with
``retriable`` from a whitelist: connection errors, timeouts, 408, 429 and
5xx are retriable (``retry_after`` holds the server's ``Retry-After`` in
seconds when it sent one); any other status (400, 401, 403, 404, 413, 422 ...)
is a permanent refusal of this batch (dead-lettered). Error texts name the
status and the start of the reply, never the URL (it can hold tokens).
"""

from __future__ import annotations

import email.utils
import ssl
import time

import aiohttp

from otgate.sinks.base import describe_error
from otgate.sinks.http.config import BodyFormat, HttpSink

RETRIABLE_STATUS = frozenset({408, 429})
SPLIT_STATUS = frozenset({400, 413, 422})  # refusals that can be about some records only
CONTENT_TYPE = {BodyFormat.JSON: "application/json", BodyFormat.NDJSON: "application/x-ndjson"}


class HttpError(Exception):
    """A POST failed; ``retriable`` says whether sending the batch again can help."""

    def __init__(self, reason: str, *, retriable: bool, retry_after: float = 0.0,
                 status: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status  # HTTP status; 0 for a transport failure
        self.retriable = retriable
        self.retry_after = retry_after


def is_retriable(exc: BaseException) -> bool:
    """The whitelist: transport failures, timeouts, and statuses a retry can cure."""
    if isinstance(exc, HttpError):
        return exc.retriable
    return isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                            TimeoutError, ConnectionError))


def parse_retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); 0 when absent/bad."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HttpClient:
    """POSTs bodies to the sink's URL over one pooled aiohttp session (opened lazily)."""

    def __init__(self, config: HttpSink) -> None:
        self.config = config
        self.session: aiohttp.ClientSession | None = None
        self.timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        self.headers = {"Content-Type": CONTENT_TYPE[config.format], **config.headers}
        if config.gzip:
            self.headers["Content-Encoding"] = "gzip"
        if config.bearer_token:
            self.headers["Authorization"] = f"Bearer {config.bearer_token}"
        elif config.username:
            self.headers["Authorization"] = aiohttp.encode_basic_auth(
                config.username, config.password)
        self.requests = 0

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            ssl_ctx: ssl.SSLContext | bool = True
            if self.config.ca_file:
                ssl_ctx = ssl.create_default_context(cafile=self.config.ca_file)
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1, ssl=ssl_ctx))
        return self.session

    async def post(self, body: bytes, idempotency_key: str) -> None:
        """Send one batch; returns on 2xx, else raises ``HttpError`` (see module doc)."""
        headers = {**self.headers, "Idempotency-Key": idempotency_key}
        self.requests += 1
        try:
            async with self._session().post(self.config.url, data=body, headers=headers,
                                            timeout=self.timeout,
                                            allow_redirects=False) as resp:
                if 200 <= resp.status < 300:
                    await resp.read()
                    return
                text = (await resp.text(errors="replace")).strip()[:200]
                retriable = resp.status in RETRIABLE_STATUS or resp.status >= 500
                raise HttpError(
                    f"HTTP {resp.status}: {text}", retriable=retriable, status=resp.status,
                    retry_after=min(parse_retry_after(resp.headers.get("Retry-After")),
                                    self.config.retry_after_max_s) if retriable else 0.0)
        except HttpError:
            raise
        except aiohttp.ClientError as exc:
            raise HttpError(self._safe(describe_error(exc)), retriable=is_retriable(exc)) \
                from None
        except (TimeoutError, ConnectionError) as exc:
            raise HttpError(self._safe(describe_error(exc)), retriable=True) from None

    def _safe(self, text: str) -> str:
        return text.replace(self.config.url, self.config.redacted_url())

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
