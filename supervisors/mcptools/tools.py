"""The frame every MCP tool runs in: a read (gateway calls, then an audit note)
or a confirmed action (preview and token, then token, the person's yes and the
gateway's own role check and audit). See ``server.py`` for the tools."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.elicitation import AcceptedElicitation
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, Field

from otgate.config.secrets import Redactor
from otgate.supervisors.api_client import ApiError
from otgate.supervisors.mcptools.analysis import walk
from otgate.supervisors.mcptools.confirm import ConfirmationRefused, Confirmations
from otgate.supervisors.mcptools.gateway_api import GatewayApi


class PersonConfirms(BaseModel):
    """What a person answers when asked to confirm an action."""

    confirm: bool = Field(description="yes: do it now")


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
        for path, node in walk(health.get("components") or []):
            if component in (path, node["id"]):
                return {"path": path, "gateway_time": health.get("time"), **node}
        known = [p for p, _n in walk(health.get("components") or [])]
        raise ApiError(404, f"no component {component!r} (have {', '.join(known[:40])})")

    async def sinks(self) -> list[dict[str, Any]]:
        health = await self.health()
        out = []
        for path, node in walk(health.get("components") or []):
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
