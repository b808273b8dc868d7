"""The HTTP status endpoint (aiohttp): health, metrics, operator actions.

``/health*`` and ``/metrics`` need no token. Every other route needs
``Authorization: Bearer TOKEN`` with a role at least as strong as the route's:
viewer < operator < engineer < admin. Alarm and DLQ routes are the HTTP face
of the operator services (``ops_http.py``); ``/console/`` is the operator
console, a web page over the same routes (``console/``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from otgate.actors.messages import InjectFault
from otgate.supervisors.access import Role
from otgate.supervisors.console.routes import Console
from otgate.supervisors.http_access import authorize, json_object
from otgate.supervisors.metrics import render
from otgate.supervisors.ops_http import OperatorRoutes
from otgate.supervisors.ops_http_reads import ReadRoutes
from otgate.supervisors.write_routes import write_routes

if TYPE_CHECKING:
    from otgate.supervisors.gateway import Gateway

log = logging.getLogger("otgate.status")
FAULT_KINDS = ("hang", "leak", "crash", "exit")


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class StatusServer:
    def __init__(self, gateway: Gateway, listen: str) -> None:
        self.gateway = gateway
        self.listen = listen
        self.url = ""
        self.console = Console(gateway)
        app = web.Application()
        app.add_routes(
            [
                web.get("/health/live", self.live),
                web.get("/health/ready", self.ready),
                web.get("/health", self.health),
                web.get("/metrics", self.metrics),
                web.post("/faults", self.fault),
                *OperatorRoutes(gateway).routes(),
                *ReadRoutes(gateway).routes(),
                *self.console.routes(),
                *write_routes(gateway),
            ]
        )
        # Short shutdown: a stopping gateway does not wait a minute for open requests.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)

    async def start(self) -> str:
        await self._runner.setup()
        self.console.start()
        host, port = split_listen(self.listen)
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        bound = site._server.sockets[0].getsockname()  # port 0 picks one
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.url = f"http://{shown}:{bound[1]}"
        log.info("status_listening url=%s", self.url)
        return self.url

    async def close(self) -> None:
        self.console.close()  # live streams end before the runner waits for them
        await self._runner.cleanup()

    # -- read-only ----------------------------------------------------------------
    async def live(self, request: web.Request) -> web.Response:
        # Answering at all proves the process loop turns.
        return web.json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        ok = self.gateway.ready()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(self.gateway.health())

    async def metrics(self, request: web.Request) -> web.Response:
        body = render(self.gateway.snapshot, self.gateway.ops.alarms.table.counts)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

    # -- mutating -----------------------------------------------------------------
    async def fault(self, request: web.Request) -> web.Response:
        authorize(self.gateway, request, Role.ADMIN, mutating=True)
        if not self.gateway.config.gateway.fault_injection:
            raise web.HTTPForbidden(text="fault injection is disabled ([gateway] fault_injection)")
        body = await json_object(request)
        kind, bulkhead, target = body.get("kind"), body.get("bulkhead"), body.get("target")
        if kind not in FAULT_KINDS:
            raise web.HTTPBadRequest(text=f"kind: expected one of {', '.join(FAULT_KINDS)}")
        if not isinstance(bulkhead, str) or not (target is None or isinstance(target, str)):
            raise web.HTTPBadRequest(text="bulkhead: expected a string; target: a string or absent")
        try:
            await self.gateway.inject(bulkhead, InjectFault(kind=kind, target=target))
        except KeyError:
            raise web.HTTPNotFound(text=f"no running bulkhead {bulkhead!r}") from None
        return web.json_response({"injected": kind, "bulkhead": bulkhead})
