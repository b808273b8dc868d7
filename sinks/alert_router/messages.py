"""The text and bodies of notifications: generic JSON, Slack-compatible, e-mail."""

from __future__ import annotations

import datetime
from email.message import EmailMessage

import msgspec

from otgate.actors.records import Alarm
from otgate.sinks.alert_router.config import EmailDestination
from otgate.sinks.alert_router.routing import Notice


def _utc(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def line(a: Alarm) -> str:
    """One transition in one line: severity, event, asset, message, state, who."""
    what = a.message or f"{a.parameter} ({a.kind or a.definition or a.alarm_id})"
    who = f" by {a.by}" if a.by and a.by != "evaluator" else ""
    return (f"{a.severity.value} {a.event or a.state.value.lower()} {a.asset_id}: {what}"
            f" [{a.state.value}{who}, {_utc(a.gateway_time)}]")


def title(n: Notice) -> str:
    """The headline of a notification (mail subject, first line of a chat message)."""
    a = n.alarms[0]
    if n.kind == "digest":
        sev = "/".join(dict.fromkeys(x.severity.value for x in n.alarms))
        return f"Digest: {len(n.alarms)} {sev} alarm transition(s)"
    if n.kind == "escalation":
        return (f"ESCALATION {a.severity.value}: {a.asset_id} {a.message or a.alarm_id}"
                f" unacknowledged since {_utc(a.raised_time or a.gateway_time)}")
    return f"{a.severity.value} {a.event}: {a.asset_id} {a.message or a.alarm_id}"


def json_body(n: Notice, gateway_id: str) -> bytes:
    """The generic webhook body: every field of every transition, and the headline."""
    return msgspec.json.encode({
        "kind": n.kind, "key": n.key, "gateway_id": gateway_id, "text": title(n),
        "alarms": n.alarms,
    })


def slack_body(n: Notice) -> bytes:
    """A Slack incoming-webhook body (``text`` with mrkdwn)."""
    lines = [f"*{title(n)}*"] + [f"• {line(a)}" for a in n.alarms]
    return msgspec.json.encode({"text": "\n".join(lines)})


def email(n: Notice, dest: EmailDestination, gateway_id: str) -> EmailMessage:
    """A plain-text mail; ``Message-ID`` derives from the idempotency key, so a mail
    sent twice (a retry after a lost reply) can be recognised as one."""
    msg = EmailMessage()
    msg["From"] = dest.sender
    msg["To"] = ", ".join(dest.recipients)
    msg["Subject"] = f"{dest.subject_prefix} {title(n)}".strip()
    safe = "".join(c if c.isalnum() or c in "-._" else "." for c in n.key)
    msg["Message-ID"] = f"<{safe}@{gateway_id or 'otgate'}.otgate>"
    msg["X-Otgate-Key"] = n.key
    body = [title(n), ""] + [line(a) for a in n.alarms]
    if n.kind != "digest":
        a = n.alarms[0]
        body += ["", f"alarm_id: {a.alarm_id}", f"occurrence: {a.occurrence_id}",
                 f"area: {a.area}", f"owner: {a.owner}", f"value: {a.value}",
                 f"limit: {a.limit}", f"gateway: {gateway_id}"]
    msg.set_content("\n".join(body) + "\n")
    return msg
