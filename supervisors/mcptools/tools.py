"""The frame every MCP tool runs in: a read (gateway calls, then an audit note)
or a confirmed action (preview and token; then the token, the person's yes,
and the gateway's own role check and audit). See ``server.py`` for the tools.

Whose token: over stdio, the one ``otgate mcp`` was started with (the host
that started it is the only client). Over HTTP, each request's own
``Authorization: Bearer`` gateway token: the server holds none, so a local
process that can reach the port can do no more than its own token allows.
"""

from __future__ import annotations

import hashlib
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
from otgate.supervisors.mcptools.confirm import ConfirmationRefused, Confirmations
from otgate.supervisors.mcptools.gateway_api import CallerApi, GatewayApi

Fetch = Callable[[CallerApi], Awaitable[Any]]
Execute = Callable[[CallerApi, Any], Awaitable[Any]]
"""An action: the caller's gateway calls and what the proposal's preview bound it to."""


class PersonConfirms(BaseModel):
    """What a person answers when asked to confirm an action."""

    confirm: bool = Field(description="yes: do it now")


class Tools:
    """Runs tools against one gateway with one confirmation book; ``token`` is
    the stdio caller's (None over HTTP: each request brings its own)."""

    def __init__(
        self,
        api: GatewayApi,
        book: Confirmations,
        token: str | None,
        ask_person: bool = True,
    ) -> None:
        self.api = api
        self.book = book
        self.token = token
        self.ask_person = ask_person

    def caller(self, ctx: Context) -> CallerApi:
        """The gateway calls of whoever made this MCP request (see module doc)."""
        if ctx.headers is None:
            if self.token is None:
                raise ToolError("no gateway token for this transport")
            return self.api.as_caller(self.token)
        bearer = ctx.headers.get("authorization", "")
        if not bearer.startswith("Bearer ") or not bearer[7:].strip():
            raise ToolError(
                "HTTP 401 (no valid token): send Authorization: Bearer <gateway token>"
            )
        return self.api.as_caller(bearer[7:].strip())

    @staticmethod
    def answer(api: CallerApi, doc: Any) -> str:
        """``doc`` as JSON text, with the caller's own token scrubbed out."""
        return Redactor([api.token]).text(json.dumps(doc, indent=1, default=str))

    async def read(self, ctx: Context, tool: str, target: str, fetch: Fetch) -> str:
        """Run one read tool: its gateway calls, then its audit note."""
        api = self.caller(ctx)
        doc = await _noted(api, tool, target, fetch)
        await _note(api, tool, target, "ok")
        return self.answer(api, doc)

    async def act(
        self,
        ctx: Context,
        tool: str,
        target: str,
        arguments: dict[str, Any],
        confirmation: str,
        preview: Fetch,
        execute: Execute,
        bind: Callable[[Any], Any] | None = None,
    ) -> str:
        """Preview and issue a token (no ``confirmation``), or redeem it and execute.
        ``bind(preview)``: what the proposal commits the action to (kept with the
        token, given to ``execute`` as its second argument; None without ``bind``)."""
        api = self.caller(ctx)
        session = _session_of(ctx, api)
        if not confirmation:
            shown = await _noted(api, tool, target, preview)
            bound = bind(shown) if bind else None
            token = self.book.issue(tool, arguments, session, bound)
            await _note(api, tool, target, "preview", "confirmation token issued")
            answer = {
                "status": "needs_confirmation",
                "done": False,
                "preview": shown,
                "confirmation": token,
                "expires_in_s": self.book.ttl_s,
                "next": "show the preview to the person; if they agree, call "
                f"{tool} again with the same arguments and this confirmation",
            }
            if bound:
                answer["bound_to"] = bound
            return self.answer(api, answer)
        try:
            bound = self.book.redeem(confirmation, tool, arguments, session)
            if self.ask_person:
                shown = await _noted(api, tool, target, preview)  # the state now
                await self._person_confirms(ctx, api, tool, arguments, shown, bound)
        except ConfirmationRefused as exc:
            await _note(api, tool, target, "refused", str(exc))
            raise ToolError(f"not done: {exc}; call without confirmation for a new one") from None
        try:  # the gateway's service layer checks the role and writes the audit
            result = await execute(api, bound)
        except ApiError as exc:
            raise ToolError(_failed(exc)) from None
        return self.answer(api, {"status": "done", "done": True, "result": result})

    async def _person_confirms(
        self,
        ctx: Context,
        api: CallerApi,
        tool: str,
        arguments: dict[str, Any],
        shown: Any,
        bound: Any,
    ) -> None:
        """Ask the person, through the MCP client (elicitation), whether to do it
        given the current state ``shown`` (and what the proposal ``bound`` it to);
        raises ConfirmationRefused unless they accept. The model never sees this
        exchange, so it cannot answer it."""
        caps = ctx.client_capabilities
        if caps is None or caps.elicitation is None:
            raise ConfirmationRefused(
                "this server asks a person to confirm each action (MCP elicitation) and "
                "this client cannot ask one; use a client that can, or start the server "
                "with --confirm token"
            )
        state = self.answer(api, shown)[:2000]
        message = f"otgate: do {tool} {json.dumps(arguments)}?"
        if bound:
            message += f"\nAs proposed, for: {self.answer(api, bound)[:500]}"
        message += f"\nCurrent state:\n{state}"
        try:
            answer = await ctx.elicit(message, PersonConfirms)
        except (ValueError, MCPError) as exc:
            raise ConfirmationRefused(f"asking the person failed: {exc}") from None
        if not (isinstance(answer, AcceptedElicitation) and answer.data.confirm):
            raise ConfirmationRefused(f"the person did not confirm ({answer.action})")


async def _noted(api: CallerApi, tool: str, target: str, fetch: Fetch) -> Any:
    """``fetch(api)``; a failure is audited (``mcp.<tool>``) and becomes a ToolError."""
    try:
        return await fetch(api)
    except ApiError as exc:
        await _note(api, tool, target, f"error: HTTP {exc.status}", str(exc))
        raise ToolError(_failed(exc)) from None
    except ToolError as exc:  # arguments the tool refused
        await _note(api, tool, target, "error: bad arguments", str(exc))
        raise


async def _note(api: CallerApi, tool: str, target: str, result: str, detail: str = "") -> None:
    try:
        await api.note(tool, target, result, detail)
    except ApiError as exc:  # e.g. an invalid token: the gateway audited the 401
        if exc.status == 0:
            raise ToolError(_failed(exc)) from None


def _session_of(ctx: Context, api: CallerApi) -> str:
    """The MCP session and caller a call came from: stdio serves one client per
    process; over HTTP the transport's ``mcp-session-id`` (a random id the server
    assigned at initialize) and a digest of the caller's token."""
    if ctx.headers is None:
        return "stdio"
    sid = ctx.headers.get("mcp-session-id", "")
    if not sid:
        raise ToolError("actions need an MCP session (stateful streamable HTTP or stdio)")
    return f"{sid}:{hashlib.sha256(api.token.encode()).hexdigest()[:16]}"


def _failed(exc: ApiError) -> str:
    if exc.status == 0:
        return str(exc)
    why = {401: "no valid token", 403: "forbidden", 404: "not found"}.get(exc.status, "error")
    return f"HTTP {exc.status} ({why}): {exc}"

