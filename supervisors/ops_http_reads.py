"""The HTTP face of the read services (``service/reads.py``): the running config,
schemas, recent gateway/audit log records, and ``POST /audit/notes`` for a
surface to put its own calls in the audit trail. Same frame as the operator
routes: bearer token (viewer), 401/403/400/404 mapped from the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from otgate.supervisors.access import Caller
from otgate.supervisors.ops_http import OperatorRoutes, query_limit, reply, text_field
from otgate.supervisors.service.reads import ReadService

if TYPE_CHECKING:
    from otgate.supervisors.gateway import Gateway


class ReadRoutes(OperatorRoutes):
    """``/config``, ``/schemas``, ``/logs/{topic}`` and ``/audit/notes``."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        self._reads: ReadService | None = None

    @property
    def reads(self) -> ReadService:
        # Built on first use: the status server exists before the root's operator log.
        if self._reads is None:
            self._reads = ReadService(self.gateway.oplog, lambda: self.gateway.loaded)
        return self._reads

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/config", self._read(self.config)),
            web.get("/schemas", self._read(self.schemas)),
            web.get("/logs/{topic}", self._read(self.logs)),
            web.post("/audit/notes", self._write("audit.note", self.note)),
        ]

    async def config(self, request: web.Request, caller: Caller) -> web.Response:
        return reply(await self.reads.config(caller))

    async def schemas(self, request: web.Request, caller: Caller) -> web.Response:
        return reply(await self.reads.schemas(caller, request.query.get("topic", "")))

    async def logs(self, request: web.Request, caller: Caller) -> web.Response:
        limit = query_limit(request, 50)
        topic = request.match_info["topic"]
        return reply({"records": await self.reads.recent(caller, topic, limit)})

    async def note(self, request: web.Request, caller: Caller, body: dict) -> web.Response:
        fields = {key: text_field(body, key) for key in ("name", "target", "result", "detail")}
        if not fields["result"]:
            fields["result"] = "ok"
        await self.reads.note(caller, **fields)
        return reply({"noted": True})
