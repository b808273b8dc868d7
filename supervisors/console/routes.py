"""The console's routes on the status server: the page, its assets, ``/whoami``
and the live stream.

``GET /console/`` renders ``index.html`` (``string.Template``: the gateway's id
and the simulated-data banner, escaped). ``GET /whoami`` tells the page its
caller's role and which actions that role may do, so the page greys out the
others; the services still refuse them (403, audited). ``GET /console/events``
is a server-sent-event stream for a viewer token: every ``TICK_S`` the health
document, the caller's alarm table (through the alarm service, so asset scopes
apply) and the log lines and events the page has not seen; the token is checked
again every time, so a token a reload removed ends its streams. Streams are bounded:
at most ``MAX_STREAMS`` at once, one message in flight each (a client that
does not take one within ``WRITE_TIMEOUT_S`` is dropped), all ended when the
gateway stops.
"""

from __future__ import annotations

import asyncio
import html
import logging
import string
import time
from importlib import resources
from typing import TYPE_CHECKING

import anyio
import msgspec
from aiohttp import web

from otgate.actors.log import embedded, kafka
from otgate.config.schema import GatewayConfig
from otgate.protocols.synthetic import SyntheticAdapter
from otgate.supervisors.access import Caller, Role, Unauthorized
from otgate.supervisors.console.feed import RecentLogs, RecentRecords
from otgate.supervisors.http_access import authorize, identify_request
from otgate.supervisors.service.alarms import ROLE_FOR

if TYPE_CHECKING:
    from otgate.supervisors.gateway import Gateway

log = logging.getLogger("otgate.console")

TICK_S = 1.0
EVENTS_EVERY_S = 3.0
"""How often the gateway events and audit records are read from the log (shared
by every stream; they are not worth a log read per second)."""
MAX_STREAMS = 8
WRITE_TIMEOUT_S = 10.0
MAX_ALARMS = 500
"""Alarms per message, most severe first (the table page shows no more)."""

ASSETS = {
    "console.js": "application/javascript",
    "dom.js": "application/javascript",
    "setpoints.js": "application/javascript",
    "console.css": "text/css",
    "favicon.svg": "image/svg+xml",
}

HEADERS = {
    "Cache-Control": "no-cache",
    # Only the page's own files run; the token in session storage stays out of reach
    # of anything injected or framed.
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
}

ACTIONS: dict[str, Role] = {
    **{f"alarms.{a.value.lower().replace('_', '-')}": r for a, r in ROLE_FOR.items()},
    "dlq.reprocess": Role.OPERATOR,
    "dlq.discard": Role.OPERATOR,
    "dlq.revalidate": Role.ENGINEER,
    "component.restart": Role.OPERATOR,
}
"""The weakest role of each action the page offers (the services decide; this
only greys out buttons). A point write needs the point's own role: the
Setpoints panel takes it from ``GET /points/writable``."""


def simulated_parts(cfg: GatewayConfig) -> list[str]:
    """Ids of the parts that make data up: simulators and synthetic adapters."""
    return [s.id for s in cfg.simulators] + [
        a.id for a in cfg.adapters if isinstance(a, SyntheticAdapter)
    ]


def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


class Console:
    """The console's routes (see module doc); ``close`` ends every stream."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        # Built before the gateway's log and redactor: both are looked up when used.
        self.logs = RecentLogs(lambda text: gateway.redact(text))
        self.records: RecentRecords | None = None
        self.streams = 0
        self._page = string.Template(_read("index.html").decode())
        self._closing = asyncio.Event()
        self._polled_at = float("-inf")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.redirect),
            web.get("/console", self.redirect),
            web.get("/console/", self.index),
            web.get("/console/events", self.events),
            web.get("/console/{name}", self.asset),
            web.get("/whoami", self.whoami),
        ]

    def start(self) -> None:
        self.records = RecentRecords(self.gateway.oplog)
        logging.getLogger().addHandler(self.logs)

    def close(self) -> None:
        self._closing.set()
        logging.getLogger().removeHandler(self.logs)

    # -- the page ------------------------------------------------------------------------
    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/console/")

    async def index(self, request: web.Request) -> web.Response:
        cfg = self.gateway.config
        sims = simulated_parts(cfg)
        banner = (
            f'<div id="simulated" class="banner">SIMULATED DATA — this gateway runs '
            f"simulated devices: {html.escape(', '.join(sims))}</div>"
            if sims
            else ""
        )
        body = self._page.substitute(gateway=html.escape(cfg.gateway.id), banner=banner)
        return web.Response(text=body, content_type="text/html", headers=HEADERS)

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(body=_read(name), content_type=ASSETS[name], headers=HEADERS)

    # -- who is calling ------------------------------------------------------------------
    async def whoami(self, request: web.Request) -> web.Response:
        caller = authorize(self.gateway, request)
        can = {name: caller.role.allows(role) for name, role in ACTIONS.items()}
        if caller.assets:  # a component serves many assets (the service refuses it too)
            can["component.restart"] = False
        doc = {"name": caller.name, "role": caller.role.value, "assets": caller.assets, "can": can}
        return web.Response(body=msgspec.json.encode(doc), content_type="application/json")

    # -- the live stream -----------------------------------------------------------------
    async def events(self, request: web.Request) -> web.StreamResponse:
        caller = authorize(self.gateway, request, Role.VIEWER)
        if self.streams >= MAX_STREAMS:
            raise web.HTTPServiceUnavailable(text=f"at most {MAX_STREAMS} live streams")
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        self.streams += 1
        try:
            await resp.prepare(request)
            seen = (0, 0)
            while not (self._closing.is_set() or self.gateway.stopping):
                try:
                    # by the tokens in force now: a reload may have removed this one
                    caller = identify_request(self.gateway, request)
                except Unauthorized:
                    return resp  # a reload removed the token: the page's next try gets 401
                body, seen = await self._message(caller, seen)
                with anyio.fail_after(WRITE_TIMEOUT_S):
                    await resp.write(b"data: " + body + b"\n\n")
                with anyio.move_on_after(TICK_S):
                    await self._closing.wait()
            with anyio.move_on_after(1.0):
                await resp.write(b"event: closed\ndata: {}\n\n")
        except (ConnectionError, TimeoutError):
            pass  # the page went away or stopped reading: drop it
        finally:
            self.streams -= 1
        return resp

    async def _message(
        self, caller: Caller, seen: tuple[int, int]
    ) -> tuple[bytes, tuple[int, int]]:
        await self._poll_records()
        alarms = await self.gateway.ops.alarms.list_alarms(caller)
        assert self.records is not None  # started
        logs, events = self.logs.ring.since(seen[0]), self.records.ring.since(seen[1])
        doc = {
            "t": time.time(),
            "health": self.gateway.health(),
            "alarms": alarms[:MAX_ALARMS],
            "alarms_total": len(alarms),
            "logs": logs,
            "events": events,
        }
        # What was sent, not the rings' counters: a line logged meanwhile by another thread stays due.
        seen = (logs[-1]["seq"] if logs else seen[0], events[-1]["seq"] if events else seen[1])
        return msgspec.json.encode(doc), seen

    async def _poll_records(self) -> None:
        """Read new gateway events and audit records, at most every ``EVENTS_EVERY_S``."""
        if time.monotonic() - self._polled_at < EVENTS_EVERY_S:
            return
        self._polled_at = time.monotonic()
        assert self.records is not None  # started
        try:
            await self.records.poll()
        except Exception as exc:
            if not (
                embedded.is_retriable(exc) or kafka.is_retriable(exc) or isinstance(exc, OSError)
            ):
                raise
            log.warning("console_events_retry error=%s", type(exc).__name__)
