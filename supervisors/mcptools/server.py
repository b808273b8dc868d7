"""The MCP tools: reads, analysis and confirmed actions over the gateway's
operator services (``mcp`` package, ``MCPServer``).

The server holds no permissions of its own. Every tool is one or more calls
to the gateway's status endpoint with the token ``otgate mcp`` was started
with (``gateway_api.py``), so the gateway checks the role and scope and
audits actions in its service layer, as for the CLI and the console. Calls
the gateway does not audit itself (reads, previews, refused confirmations)
are put in the same trail with ``POST /audit/notes`` as ``mcp.<tool>``.

Hard blocks: no tool returns a credential (the gateway hides secrets in
``/config`` and ``/health``; every answer is also scrubbed of the token this
server holds), there is no delete tool (no DLQ discard, no topic or alarm
deletion), ``suggest_config_change`` only returns a diff, and every action
needs the two-step confirmation of ``confirm.py``. With ``ask_person`` (the
default) the confirming call also asks the person through the MCP client
(elicitation, shown by the host, never to the model) and acts only on their
yes: the assistant cannot approve its own proposal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.elicitation import AcceptedElicitation
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from otgate.config.secrets import Redactor
from otgate.supervisors.api_client import ApiError
from otgate.supervisors.mcptools import analysis
from otgate.supervisors.mcptools.config_diff import BadChange, suggest
from otgate.supervisors.mcptools.confirm import ConfirmationRefused, Confirmations
from otgate.supervisors.mcptools.gateway_api import GatewayApi

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
ACTION = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
MAX_LIST = 1000
INSTRUCTIONS = (
    "Tools for one otgate edge gateway. Reads and analysis are free. Actions "
    "(restart_component, ack_alarm, approve_dlq) never run on the first call: it "
    "returns a preview and a confirmation token; show the preview to the person, "
    "and only after they agree call again with the same arguments and "
    "confirmation=<token>. suggest_config_change only returns a diff."
)


class PersonConfirms(BaseModel):
    """What a person answers when asked to confirm an action."""

    confirm: bool = Field(description="yes: do it now")


def _walk(nodes: list[dict], path: str = ""):
    for node in nodes:
        here = f"{path}/{node['id']}" if path else node["id"]
        yield here, node
        yield from _walk(node.get("children") or [], here)


class Tools:
    """The tool functions, bound to one gateway client and confirmation book."""

    def __init__(
        self, api: GatewayApi, book: Confirmations, token: str, ask_person: bool = True
    ) -> None:
        self.api = api
        self.book = book
        self.ask_person = ask_person
        self._scrub = Redactor([token] if token else [])

    def answer(self, doc: Any) -> str:
        return self._scrub.text(json.dumps(doc, indent=1, default=str))

    async def read(self, tool: str, target: str, fetch: Callable[[], Awaitable[Any]]) -> str:
        """Run one read tool: its gateway calls, then its audit note."""
        try:
            doc = await fetch()
        except ApiError as exc:
            await self._note(tool, target, f"error: HTTP {exc.status}", str(exc))
            raise ToolError(_failed(exc)) from None
        except ToolError as exc:  # arguments the tool refused
            await self._note(tool, target, "error: bad arguments", str(exc))
            raise
        await self._note(tool, target, "ok")
        return self.answer(doc)

    async def act(
        self,
        ctx: Context,
        tool: str,
        target: str,
        arguments: dict[str, Any],
        confirmation: str,
        preview: Callable[[], Awaitable[Any]],
        execute: Callable[[], Awaitable[Any]],
    ) -> str:
        """Preview and issue a token (no ``confirmation``), or redeem it and execute."""
        session = _session_of(ctx)
        if not confirmation:
            try:
                shown = await preview()
            except ApiError as exc:
                await self._note(tool, target, f"error: HTTP {exc.status}", str(exc))
                raise ToolError(_failed(exc)) from None
            token = self.book.issue(tool, arguments, session)
            await self._note(tool, target, "preview", "confirmation token issued")
            return self.answer(
                {
                    "status": "needs_confirmation",
                    "done": False,
                    "preview": shown,
                    "confirmation": token,
                    "expires_in_s": self.book.ttl_s,
                    "next": "show the preview to the person; if they agree, call "
                    f"{tool} again with the same arguments and this confirmation",
                }
            )
        try:
            self.book.redeem(confirmation, tool, arguments, session)
            if self.ask_person:
                await self._person_confirms(ctx, tool, arguments, preview)
        except ConfirmationRefused as exc:
            await self._note(tool, target, "refused", str(exc))
            raise ToolError(f"not done: {exc}; call without confirmation for a new one") from None
        except ApiError as exc:  # the fresh preview for the person failed
            await self._note(tool, target, f"error: HTTP {exc.status}", str(exc))
            raise ToolError(_failed(exc)) from None
        try:  # the gateway's service layer checks the role and writes the audit
            result = await execute()
        except ApiError as exc:
            raise ToolError(_failed(exc)) from None
        return self.answer({"status": "done", "done": True, "result": result})

    async def _person_confirms(
        self,
        ctx: Context,
        tool: str,
        arguments: dict[str, Any],
        preview: Callable[[], Awaitable[Any]],
    ) -> None:
        """Ask the person, through the MCP client (elicitation), whether to do it;
        raises ConfirmationRefused unless they accept. The model never sees this
        exchange, so it cannot answer it in the person's place."""
        caps = ctx.client_capabilities
        if caps is None or caps.elicitation is None:
            raise ConfirmationRefused(
                "this server asks a person to confirm each action (MCP elicitation) and "
                "this client cannot ask one; use a client that can, or start the server "
                "with --confirm token"
            )
        shown = json.dumps(await preview(), indent=1, default=str)
        message = (
            f"otgate: do {tool} {json.dumps(arguments, default=str)}?\n"
            f"Current state:\n{self._scrub.text(shown)[:2000]}"
        )
        try:
            answer = await ctx.elicit(message, PersonConfirms)
        except (ValueError, MCPError) as exc:
            raise ConfirmationRefused(f"asking the person failed: {exc}") from None
        if not (isinstance(answer, AcceptedElicitation) and answer.data.confirm):
            raise ConfirmationRefused(f"the person did not confirm ({answer.action})")

    async def _note(self, tool: str, target: str, result: str, detail: str = "") -> None:
        try:
            await self.api.note(tool, target, result, detail)
        except ApiError as exc:  # e.g. an invalid token: the gateway audited the 401
            if exc.status == 0:
                raise ToolError(_failed(exc)) from None

    # -- views ------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        return await self.api.get("/health")

    async def component(self, component: str) -> dict[str, Any]:
        health = await self.health()
        for path, node in _walk(health.get("components") or []):
            if component in (path, node["id"]):
                return {"path": path, "gateway_time": health.get("time"), **node}
        known = [p for p, _n in _walk(health.get("components") or [])]
        raise ApiError(404, f"no component {component!r} (have {', '.join(known[:40])})")

    async def sinks(self) -> list[dict[str, Any]]:
        health = await self.health()
        out = []
        for path, node in _walk(health.get("components") or []):
            if not str(node.get("kind", "")).startswith("sink."):
                continue
            m = node.get("metrics") or {}
            out.append(
                {
                    "sink": path,
                    "kind": node["kind"],
                    "state": node.get("state"),
                    "lag_records": m.get("lag_records"),
                    "connected": m.get("connected"),
                    "breaker_state": m.get("breaker_state"),
                    "restarts": node.get("restarts", 0),
                    "last_error": node.get("last_error"),
                }
            )
        return out

    async def metrics(self, prefix: str, limit: int) -> list[str]:
        text = await self.api.text("/metrics")
        lines = [ln for ln in text.splitlines() if ln.startswith(prefix) and not ln.startswith("#")]
        return lines[:limit]


def _session_of(ctx: Context) -> str:
    """The MCP session a call came in: stdio serves one client per process; over
    HTTP the transport's ``mcp-session-id`` (a random id the server assigned at
    initialize, so a client cannot pick another session's)."""
    headers = ctx.headers
    if headers is None:
        return "stdio"
    sid = headers.get("mcp-session-id", "")
    if not sid:
        raise ToolError("actions need an MCP session (stateful streamable HTTP or stdio)")
    return sid


def _failed(exc: ApiError) -> str:
    if exc.status == 0:
        return str(exc)
    why = {401: "no valid token", 403: "forbidden", 404: "not found"}.get(exc.status, "error")
    return f"HTTP {exc.status} ({why}): {exc}"


def _limit(n: int) -> int:
    if not 0 < n <= MAX_LIST:
        raise ToolError(f"limit: expected 1..{MAX_LIST}")
    return n


def build(
    api: GatewayApi, book: Confirmations, token: str, ask_person: bool = True
) -> MCPServer:
    """The MCP server with every otgate tool registered (see module doc);
    ``ask_person``: a confirmed action also needs a person's yes (elicitation)."""
    t = Tools(api, book, token, ask_person)
    server = MCPServer("otgate", instructions=INSTRUCTIONS, log_level="WARNING")
    tool = server.tool

    @tool(annotations=READ)
    async def gateway_status() -> str:
        """The gateway's rolled-up status (HEALTHY/DEGRADED/UNHEALTHY/FAILED), uptime,
        config version and each bulkhead's state, restarts and last error."""

        async def fetch() -> dict[str, Any]:
            h = await t.health()
            h["bulkheads"] = [
                {k: b.get(k) for k in ("id", "kind", "state", "restarts", "last_error")}
                for b in h.pop("components", [])
            ]
            return h

        return await t.read("gateway_status", "", fetch)

    @tool(annotations=READ)
    async def component_status(component: str) -> str:
        """One component (bulkhead id, actor id or path like ``plc-1/plc-1.session``)
        with its state, restarts, last error and age, mailbox, metrics and children."""
        return await t.read("component_status", component, lambda: t.component(component))

    @tool(annotations=READ)
    async def sink_status() -> str:
        """Every sink: state, records behind the log (lag), connection, breaker, last error."""
        return await t.read("sink_status", "", t.sinks)

    @tool(annotations=READ)
    async def alarms(state: str = "", severity: str = "", asset: str = "") -> str:
        """The alarm table (current state per alarm); filters are comma-separated
        states (ACTIVE, ACKED...), severities, and an asset pattern."""
        return await t.read(
            "alarms",
            asset,
            lambda: t.api.get("/alarms", state=state, severity=severity, asset=asset),
        )

    @tool(annotations=READ)
    async def dlq_messages(
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
            "dlq_messages",
            reason,
            lambda: t.api.get("/dlq", disposition=disposition, limit=_limit(limit), **query),
        )

    @tool(annotations=READ)
    async def dlq_message(letter_id: str) -> str:
        """One dead letter (``dlq.telemetry/0/12``) with the original reading."""
        if not re.fullmatch(r"[\w.]+/\d+/\d+", letter_id):
            raise ToolError("letter_id: expected <topic>/<partition>/<offset>")
        return await t.read("dlq_message", letter_id, lambda: t.api.get(f"/dlq/{letter_id}"))

    @tool(annotations=READ)
    async def config() -> str:
        """The running config (every secret, token and password replaced by ***)."""
        return await t.read("config", "", lambda: t.api.get("/config"))

    @tool(annotations=READ)
    async def schemas(topic: str = "") -> str:
        """The Avro schema of each log topic (or one ``topic``) and its record type."""
        return await t.read("schemas", topic, lambda: t.api.get("/schemas", topic=topic))

    @tool(annotations=READ)
    async def logs(topic: str = "logs.gateway", limit: int = 50) -> str:
        """The most recent records of ``logs.gateway`` (what the gateway did) or
        ``logs.audit`` (who did what), oldest first."""
        return await t.read(
            "logs", topic, lambda: t.api.get(f"/logs/{topic}", limit=_limit(limit))
        )

    @tool(annotations=READ)
    async def metrics(prefix: str = "otgate_", limit: int = 200) -> str:
        """Prometheus metric samples whose name starts with ``prefix``."""
        return await t.read("metrics", prefix, lambda: t.metrics(prefix, _limit(limit)))

    @tool(annotations=READ)
    async def diagnose_gateway() -> str:
        """What is broken, since when, and the likely cause (from states, restarts,
        last errors, heartbeats, mailboxes, sink lag, breakers), with active alarms."""

        async def fetch() -> dict[str, Any]:
            found = await t.api.get("/alarms")
            return analysis.diagnose(await t.health(), found["alarms"])

        return await t.read("diagnose_gateway", "", fetch)

    @tool(annotations=READ)
    async def dlq_summary(disposition: str = "PENDING", limit: int = MAX_LIST) -> str:
        """Dead letters grouped by reason, stage and asset/parameter, most frequent
        first: which pattern fills the DLQ and since when."""

        async def fetch() -> dict[str, Any]:
            found = await t.api.get("/dlq", disposition=disposition, limit=_limit(limit))
            return {"total": found["total"], **analysis.dlq_patterns(found["letters"])}

        return await t.read("dlq_summary", disposition, fetch)

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
            lambda: t.component(component),
            lambda: t.api.post(f"/components/{component}/restart", {}),
        )

    @tool(annotations=ACTION)
    async def ack_alarm(alarm_ids: list[str], ctx: Context, note: str = "", confirmation: str = "") -> str:
        """Acknowledge alarms. Needs an operator token and a confirmation: the first
        call only previews the alarms and returns the token."""
        body = {"alarm_ids": alarm_ids, "note": note}

        async def preview() -> list[Any]:
            return [(await t.api.get(f"/alarms/{a}"))["alarm"] for a in alarm_ids]

        return await t.act(
            ctx,
            "ack_alarm",
            ",".join(alarm_ids),
            body,
            confirmation,
            preview,
            lambda: t.api.post("/alarms/ack", {**body, "wait_s": 2.0}),
        )

    @tool(annotations=ACTION)
    async def approve_dlq(letter_ids: list[str], ctx: Context, note: str = "", confirmation: str = "") -> str:
        """Approve dead letters for reprocessing (re-validated with the current rules;
        still invalid ones stay). Needs an operator token and a confirmation."""
        body = {"ids": letter_ids, "note": note}

        async def preview() -> list[Any]:
            shown = []
            for i in letter_ids:
                doc = await t.api.get(f"/dlq/{i}")
                letter = doc["letter"]
                reading = letter.get("reading") or {}
                point = f"{reading.get('asset_id')}/{reading.get('parameter')}"
                shown.append(
                    {
                        "id": i,
                        "disposition": doc.get("disposition"),
                        "reason": letter.get("reason"),
                        "point": point,
                        "value": reading.get("value"),
                    }
                )
            return shown

        return await t.act(
            ctx,
            "approve_dlq",
            ",".join(letter_ids),
            body,
            confirmation,
            preview,
            lambda: t.api.post("/dlq/reprocess", body),
        )

    @tool(annotations=READ)
    async def suggest_config_change(changes: dict[str, Any], reason: str = "") -> str:
        """A config change as a diff against the running config, checked against the
        config schema; never applied. ``changes``: {"dotted.path[0].key": value}."""

        async def fetch() -> dict[str, Any]:
            running = (await t.api.get("/config"))["config"]
            try:
                return {"reason": reason, **suggest(running, changes)}
            except BadChange as exc:
                raise ToolError(str(exc)) from None

        return await t.read("suggest_config_change", ",".join(changes), fetch)

    return server
