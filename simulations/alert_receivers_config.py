"""Config of the demo's alert receivers, apart from the servers so that loading a
gateway config imports neither aiohttp nor aiosmtpd."""

from __future__ import annotations

from otgate.config.base import PortOrZero, StrictStruct


class WebhookReceiverConfig(StrictStruct):
    """A local webhook endpoint (any path) for the demo's alert route."""

    host: str = "127.0.0.1"
    """Address to listen on (keep it on loopback)."""
    port: PortOrZero = 18080
    """Port (0 = ephemeral)."""


class SmtpReceiverConfig(StrictStruct):
    """A local SMTP server for the demo's mail route (accepts every mail)."""

    host: str = "127.0.0.1"
    """Address to listen on (keep it on loopback)."""
    port: PortOrZero = 10025
    """Port (0 = ephemeral)."""
