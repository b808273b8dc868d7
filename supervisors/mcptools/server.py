"""The MCP tools: reads, analysis and confirmed actions over the gateway's
operator services (``mcp`` package, ``MCPServer``).

The server holds no permissions of its own. Every tool is one or more calls
to the gateway's status endpoint with the token ``otgate mcp`` was started
with (``gateway_api.py``), so the gateway checks the role and scope and
audits actions in its service layer, as for the CLI and the console. Calls
the gateway does not audit itself (reads, previews, refused confirmations)
are put in the same trail with ``POST /audit/notes`` as ``mcp.<tool>``.

Each call acts with its caller's gateway token (``tools.py``: the one
``otgate mcp`` was started with over stdio, the request's bearer over HTTP).

Hard blocks: no tool returns a credential (the gateway hides secrets in
``/config`` and ``/health``; every answer is also scrubbed of the caller's
token), there is no delete tool (no DLQ discard, no topic or alarm
deletion), ``suggest_config_change`` only returns a diff, and every action
needs the two-step confirmation of ``confirm.py``. With ``ask_person`` (the
default) the confirming call also asks the person through the MCP client
(elicitation, shown by the host, never to the model) and acts only on their
yes: the assistant cannot approve its own proposal.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from otgate.supervisors.cmd_alarms import split_occurrences
from otgate.supervisors.mcptools import analysis, views
from otgate.supervisors.mcptools.config_diff import BadChange, suggest
from otgate.supervisors.mcptools.confirm import Confirmations
from otgate.supervisors.mcptools.gateway_api import CallerApi, GatewayApi
from otgate.supervisors.mcptools.tools import Tools

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
ACTION = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
MAX_LIST = 1000
INSTRUCTIONS = (
    "Tools for one otgate edge gateway. Reads and analysis are free. Actions "
    "(restart_component, ack_alarm, approve_dlq, write_point) never run on the first call: it "
    "returns a preview and a confirmation token; show the preview to the person, "
    "and only after they agree call again with the same arguments and "
    "confirmation=<token>; the server then asks the person itself before acting. "
    "suggest_config_change only returns a diff; no tool applies config or deletes."
)


def _limit(n: int) -> int:
    if not 0 < n <= MAX_LIST:
        raise ToolError(f"limit: expected 1..{MAX_LIST}")
    return n


def build(
    api: GatewayApi, book: Confirmations, token: str | None, ask_person: bool = True
) -> MCPServer:
    """The MCP server with every otgate tool registered (see module doc);
    ``token``: the stdio caller's (None over HTTP); ``ask_person``: a confirmed
    action also needs a person's yes (elicitation)."""
    t = Tools(api, book, token, ask_person)
    server = MCPServer("otgate", instructions=INSTRUCTIONS, log_level="WARNING")
    tool = server.tool

    @tool(annotations=READ)
    async def gateway_status(ctx: Context) -> str:
        """The gateway's rolled-up status (HEALTHY/DEGRADED/UNHEALTHY/FAILED), uptime,
        config version and each bulkhead's state, restarts and last error."""
        return await t.read(ctx, "gateway_status", "", views.status)

    @tool(annotations=READ)
    async def component_status(component: str, ctx: Context) -> str:
        """One component (bulkhead id, actor id or path like ``plc-1/plc-1.session``)
        with its state, restarts, last error and age, mailbox, metrics and children."""
        return await t.read(
            ctx, "component_status", component, lambda api: views.component(api, component)
        )

    @tool(annotations=READ)
    async def sink_status(ctx: Context) -> str:
        """Every sink: state, records behind the log (lag), connection, breaker, last error."""
        return await t.read(ctx, "sink_status", "", views.sinks)

    @tool(annotations=READ)
    async def alarms(ctx: Context, state: str = "", severity: str = "", asset: str = "") -> str:
        """The alarm table (current state per alarm); filters are comma-separated
        states (ACTIVE_UNACKED...), severities, and an asset pattern."""
        query = {"state": state, "severity": severity, "asset": asset}
        return await t.read(ctx, "alarms", asset, lambda api: api.get("/alarms", **query))

    @tool(annotations=READ)
    async def dlq_messages(
        ctx: Context,
        topic: str = "",
        reason: str = "",
        asset: str = "",
        parameter: str = "",
        disposition: str = "",
        limit: int = 50,
    ) -> str:
        """Dead letters with their disposition (PENDING, REPROCESSED...); ``reason``
        is a prefix, ``asset``/``parameter`` fnmatch patterns."""
        query = dict(topic=topic, reason=reason, asset=asset, parameter=parameter)
        return await t.read(
            ctx,
            "dlq_messages",
            reason,
            lambda api: api.get("/dlq", disposition=disposition, limit=_limit(limit), **query),
        )

    @tool(annotations=READ)
    async def dlq_message(letter_id: str, ctx: Context) -> str:
        """One dead letter (``dlq.telemetry/0/12``) with the original reading."""
        return await t.read(
            ctx, "dlq_message", letter_id, lambda api: api.get(_letter_path(letter_id))
        )

    @tool(annotations=READ)
    async def config(ctx: Context) -> str:
        """The running config (every secret, token and password replaced by ***)."""
        return await t.read(ctx, "config", "", lambda api: api.get("/config"))

    @tool(annotations=READ)
    async def schemas(ctx: Context, topic: str = "") -> str:
        """The Avro schema of each log topic (or one ``topic``) and its record type."""
        return await t.read(ctx, "schemas", topic, lambda api: api.get("/schemas", topic=topic))

    @tool(annotations=READ)
    async def logs(ctx: Context, topic: str = "logs.gateway", limit: int = 50) -> str:
        """The most recent records of ``logs.gateway`` (what the gateway did) or
        ``logs.audit`` (who did what), oldest first."""
        return await t.read(
            ctx, "logs", topic, lambda api: api.get(f"/logs/{quote(topic, safe='')}", limit=_limit(limit))
        )

    @tool(annotations=READ)
    async def metrics(ctx: Context, prefix: str = "otgate_", limit: int = 200) -> str:
        """Prometheus metric samples whose name starts with ``prefix``."""
        return await t.read(
            ctx, "metrics", prefix, lambda api: views.metrics(api, prefix, _limit(limit))
        )

    @tool(annotations=READ)
    async def device_shadow(asset: str, ctx: Context) -> str:
        """The device shadow of an asset's writable points: ``reported`` (what the
        device holds), ``desired`` (the last write requested and its status) and
        ``delta`` (points whose desired value the device does not report)."""
        return await t.read(ctx, "device_shadow", asset, lambda api: views.shadow(api, asset))

    @tool(annotations=READ)
    async def diagnose_gateway(ctx: Context) -> str:
        """What is broken, since when, and the likely cause (from states, restarts,
        last errors, heartbeats, mailboxes, sink lag, breakers), with active alarms."""

        async def fetch(api: CallerApi) -> dict[str, Any]:
            found = await api.get("/alarms")
            return analysis.diagnose(await api.get("/health"), found["alarms"])

        return await t.read(ctx, "diagnose_gateway", "", fetch)

    @tool(annotations=READ)
    async def dlq_summary(ctx: Context, disposition: str = "PENDING", limit: int = MAX_LIST) -> str:
        """Dead letters grouped by reason, stage and asset/parameter, most frequent
        first: which pattern fills the DLQ and since when."""

        async def fetch(api: CallerApi) -> dict[str, Any]:
            found = await api.get("/dlq", disposition=disposition, limit=_limit(limit))
            return {"total": found["total"], **analysis.dlq_patterns(found["letters"])}

        return await t.read(ctx, "dlq_summary", disposition, fetch)

    @tool(annotations=READ)
    async def suggest_config_change(ctx: Context, changes: dict[str, Any], reason: str = "") -> str:
        """A config change as a diff against the running config, checked against the
        config schema; never applied. ``changes``: {"dotted.path[0].key": value}."""

        async def fetch(api: CallerApi) -> dict[str, Any]:
            running = (await api.get("/config"))["config"]
            try:
                return {"reason": reason, **suggest(running, changes)}
            except BadChange as exc:
                raise ToolError(str(exc)) from None

        return await t.read(ctx, "suggest_config_change", ",".join(changes), fetch)

    @tool(annotations=ACTION)
    async def restart_component(component: str, ctx: Context, confirmation: str = "") -> str:
        """Restart one bulkhead (clears FAILED). Needs an operator token and a
        confirmation: the first call only previews and returns the token."""
        return await t.act(
            ctx,
            "restart_component",
            component,
            {"component": component},
            confirmation,
            lambda api: views.component(api, component),
            lambda api, _: api.post(f"/components/{quote(component, safe='')}/restart", {}),
        )

    @tool(annotations=ACTION)
    async def ack_alarm(
        alarm_ids: list[str], ctx: Context, note: str = "", confirmation: str = ""
    ) -> str:
        """Acknowledge alarms. Needs an operator token and a confirmation: the first
        call only previews the alarms and returns the token. The ack is for the
        activations that preview showed (or ``ALARM_ID#N``, as the alarm's
        ``occurrence_id`` names one): an alarm raised again since is refused."""
        ids, named = split_occurrences(alarm_ids)

        async def preview(api: CallerApi) -> list[Any]:
            return [(await api.get(f"/alarms/{quote(a, safe='')}"))["alarm"] for a in ids]

        def activations(shown: list[Any]) -> dict[str, str]:
            seen = {a["alarm_id"]: a["occurrence_id"] for a in shown if a.get("occurrence_id")}
            return {**seen, **named}

        async def ack(api: CallerApi, bound: dict[str, str]) -> Any:
            body = {"alarm_ids": ids, "note": note, "occurrence_ids": bound, "wait_s": 2.0}
            return await api.post("/alarms/ack", body)

        return await t.act(
            ctx,
            "ack_alarm",
            ",".join(alarm_ids),
            {"alarm_ids": alarm_ids, "note": note},
            confirmation,
            preview,
            ack,
            bind=activations,
        )

    @tool(annotations=ACTION)
    async def approve_dlq(
        letter_ids: list[str], ctx: Context, note: str = "", confirmation: str = ""
    ) -> str:
        """Approve dead letters for reprocessing (re-validated with the current rules;
        still invalid ones stay). Needs an operator token and a confirmation."""
        body = {"ids": letter_ids, "note": note}

        async def preview(api: CallerApi) -> list[Any]:
            return [_letter_line(i, await api.get(_letter_path(i))) for i in letter_ids]

        return await t.act(
            ctx,
            "approve_dlq",
            ",".join(letter_ids),
            body,
            confirmation,
            preview,
            lambda api, _: api.post("/dlq/reprocess", body),
        )

    @tool(annotations=ACTION)
    async def write_point(
        asset: str,
        parameter: str,
        value: bool | int | float | str,
        ctx: Context,
        confirmation: str = "",
    ) -> str:
        """Write a value to a device point (Modbus register or coil, OPC UA variable).
        Needs a token with the point's role and a confirmation: the first call only
        previews the point's limits, role, reported and desired value and returns
        the token. The answer is the write's result (WRITTEN, REJECTED, MISMATCH,
        EXPIRED, TIMED_OUT, FAILED) once the device answered."""
        target = f"{asset}/{parameter}"
        return await t.act(
            ctx,
            "write_point",
            target,
            {"asset": asset, "parameter": parameter, "value": value},
            confirmation,
            lambda api: views.write_preview(api, asset, parameter, value),
            lambda api, _: views.write(api, asset, parameter, value),
        )

    return server


def _letter_path(letter_id: str) -> str:
    """``/dlq/<topic>/<partition>/<offset>`` for a dead letter's id (checked)."""
    if not re.fullmatch(r"[\w.]+/\d+/\d+", letter_id):
        raise ToolError(f"{letter_id!r}: expected a letter id <topic>/<partition>/<offset>")
    return f"/dlq/{letter_id}"


def _letter_line(letter_id: str, shown: dict[str, Any]) -> dict[str, Any]:
    """One dead letter as a person confirming its reprocessing wants to see it."""
    letter = shown["letter"]
    reading = letter.get("reading") or {}
    return {
        "id": letter_id,
        "disposition": shown.get("disposition"),
        "reason": letter.get("reason"),
        "point": f"{reading.get('asset_id')}/{reading.get('parameter')}",
        "value": reading.get("value"),
    }
