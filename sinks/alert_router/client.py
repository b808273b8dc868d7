"""Sending one notification to one destination, and which failures a retry can cure.

Every send either returns (the destination confirmed: HTTP 2xx, SMTP 250
after DATA) or raises ``SendError`` with ``retriable`` set from a whitelist:

* webhook: connection errors, timeouts, HTTP 408, 425, 429 and 5xx are
  retriable; any other status (400, 401, 403, 404, 413, 422 ...) is a
  permanent refusal of this message (dead-lettered).
* e-mail: connection errors, timeouts, TLS failures, 4xx replies, a refused
  login and a server without STARTTLS are retriable (a misconfigured mail
  destination opens its breaker and keeps the alarms rather than
  dead-lettering them all); other 5xx replies (a refused recipient, a
  message too large) are permanent.

Secrets (webhook URLs and headers, SMTP passwords) never appear in an error
text: the URL is replaced by the destination id.
"""

from __future__ import annotations

import ssl

import aiohttp
import aiosmtplib

from otgate.sinks.alert_router import messages
from otgate.sinks.alert_router.config import (
    EmailDestination,
    TlsMode,
    WebhookDestination,
    WebhookFormat,
)
from otgate.sinks.alert_router.routing import Notice
from otgate.sinks.base import describe_error

RETRIABLE_STATUS = frozenset({408, 425, 429})


class SendError(Exception):
    """A send failed; ``retriable`` says whether trying again can help."""

    def __init__(self, reason: str, *, retriable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retriable = retriable


def status_retriable(status: int) -> bool:
    return status in RETRIABLE_STATUS or status >= 500


class WebhookClient:
    """POSTs notifications to one URL with an ``Idempotency-Key`` header (``alarm_id:seq``)."""

    def __init__(self, dest: WebhookDestination, session: aiohttp.ClientSession,
                 gateway_id: str) -> None:
        self.dest = dest
        self.session = session
        self.gateway_id = gateway_id
        self.timeout = aiohttp.ClientTimeout(total=dest.timeout_s)

    def body(self, n: Notice) -> bytes:
        if self.dest.format is WebhookFormat.SLACK:
            return messages.slack_body(n)
        return messages.json_body(n, self.gateway_id)

    async def send(self, n: Notice) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": n.key,
                   **self.dest.headers}
        try:
            async with self.session.post(self.dest.url, data=self.body(n), headers=headers,
                                         timeout=self.timeout, allow_redirects=False) as resp:
                if 200 <= resp.status < 300:
                    await resp.read()
                    return
                text = (await resp.text(errors="replace")).strip()[:200]
                raise SendError(f"HTTP {resp.status}: {text}",
                                retriable=status_retriable(resp.status))
        except SendError:
            raise
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError,
                ConnectionError) as exc:
            raise SendError(self._safe(describe_error(exc)), retriable=True) from None
        except aiohttp.ClientError as exc:
            raise SendError(self._safe(describe_error(exc)), retriable=False) from None

    def _safe(self, text: str) -> str:
        return text.replace(self.dest.url, f"<{self.dest.id} url>")


class EmailClient:
    """Sends each notification as one mail over SMTP (a new connection per mail)."""

    def __init__(self, dest: EmailDestination, gateway_id: str) -> None:
        self.dest = dest
        self.gateway_id = gateway_id
        self.tls_context: ssl.SSLContext | None = None
        if dest.tls is not TlsMode.NONE:
            self.tls_context = ssl.create_default_context(cafile=dest.ca_file or None)

    async def send(self, n: Notice) -> None:
        d = self.dest
        try:
            await aiosmtplib.send(
                messages.email(n, d, self.gateway_id),
                hostname=d.host, port=d.port, timeout=d.timeout_s,
                use_tls=d.tls is TlsMode.TLS,
                start_tls=True if d.tls is TlsMode.STARTTLS else False,
                tls_context=self.tls_context,
                username=d.username or None, password=d.password or None,
            )
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise SendError(describe_error(exc), retriable=True) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise SendError(describe_error(exc), retriable=any(400 <= c < 500 for c in codes)) \
                from None
        except aiosmtplib.SMTPResponseException as exc:
            raise SendError(describe_error(exc), retriable=400 <= exc.code < 500) from None
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected,
                aiosmtplib.SMTPTimeoutError, ssl.SSLError, TimeoutError, OSError) as exc:
            raise SendError(describe_error(exc), retriable=True) from None
        except aiosmtplib.SMTPException as exc:  # e.g. no STARTTLS offered: a config error
            raise SendError(describe_error(exc), retriable=True) from None


Client = WebhookClient | EmailClient
