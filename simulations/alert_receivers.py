"""Where the demo's alert router delivers: a webhook endpoint (aiohttp) and an SMTP
server (aiosmtpd), both on loopback, both logging what they receive.

The tests use the same receivers as real peers: ``fail_next`` / ``down``
make the webhook answer an error status, and every accepted request is
counted per ``Idempotency-Key`` so a test can tell a duplicate.
"""

from __future__ import annotations

import collections
import email
import email.policy
import json
import logging
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import anyio
from aiohttp import web

from otgate.simulations.alert_receivers_config import SmtpReceiverConfig, WebhookReceiverConfig

log = logging.getLogger("otgate.simulations.alerts")


class WebhookReceiver:
    """Records every POST it accepts: ``received`` (JSON bodies, in order), ``keys``
    (accepted requests per ``Idempotency-Key``); ``attempts`` counts every request.
    Faults: ``down`` / ``fail_next`` answer ``fail_status``; ``reply_delay_s`` answers
    late after accepting."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.paths: list[str] = []
        self.keys: collections.Counter[str] = collections.Counter()
        self.attempts = 0
        self.fail_next = 0
        self.down = False
        self.fail_status = 503
        self.reply_delay_s = 0.0

    def duplicates(self) -> int:
        return sum(n - 1 for n in self.keys.values() if n > 1)

    async def handle(self, req: web.Request) -> web.Response:
        self.attempts += 1
        body = await req.read()
        if self.down or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            return web.Response(status=self.fail_status, text="receiver unavailable")
        key = req.headers.get("Idempotency-Key", "")
        self.keys[key] += 1
        doc = json.loads(body)
        self.received.append(doc)
        self.paths.append(req.path)
        # WARNING: the level the gateway shows by default, so the demo's reader sees it
        log.warning("webhook_received path=%s key=%s duplicate=%s text=%s", req.path, key,
                    self.keys[key] > 1, str(doc.get("text", "")).splitlines()[0][:200])
        if self.reply_delay_s:  # accepted, but the answer comes late (a lost reply)
            await anyio.sleep(self.reply_delay_s)
        return web.json_response({"ok": True})

    async def serve(self, cfg: WebhookReceiverConfig, *, task_status: Any = None) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, cfg.host, cfg.port)
            await site.start()
            port = runner.addresses[0][1]
            if task_status is not None:
                task_status.started(f"http://{cfg.host}:{port}")
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()


class SmtpReceiver:
    """An aiosmtpd handler that keeps every mail (``messages``, ``arrived`` wall times)."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.arrived: list[float] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.arrived.append(time.time())
        log.warning("smtp_received to=%s subject=%s", ",".join(envelope.rcpt_tos),
                    msg["Subject"])
        return "250 Message accepted for delivery"

    async def serve(
        self,
        cfg: SmtpReceiverConfig,
        *,
        tls_context: ssl.SSLContext | None = None,
        authenticator: Callable[..., Any] | None = None,
        task_status: Any = None,
    ) -> None:
        """Serve on the running asyncio loop; with ``tls_context`` STARTTLS is required,
        with ``authenticator`` so is a login (over TLS only)."""
        import asyncio

        from aiosmtpd.smtp import SMTP

        def factory() -> SMTP:
            return SMTP(
                self, hostname="otgate-test", tls_context=tls_context,
                require_starttls=tls_context is not None,
                authenticator=authenticator, auth_required=authenticator is not None,
                auth_require_tls=True,
            )

        server = await asyncio.get_running_loop().create_server(factory, cfg.host, cfg.port)
        try:
            port = server.sockets[0].getsockname()[1]
            if task_status is not None:
                task_status.started(f"smtp://{cfg.host}:{port}")
            await anyio.sleep_forever()
        finally:
            server.close()
            with anyio.CancelScope(shield=True):
                await server.wait_closed()


async def run_webhook_receiver(cfg: WebhookReceiverConfig, *, task_status: Any = None) -> None:
    await WebhookReceiver().serve(cfg, task_status=task_status)


async def run_smtp_receiver(cfg: SmtpReceiverConfig, *, task_status: Any = None) -> None:
    await SmtpReceiver().serve(cfg, task_status=task_status)
