"""Alert router sink: alarm transitions to webhooks, Slack and e-mail."""

from otgate.sinks.alert_router.config import AlertRouter

__all__ = ["AlertRouter"]
