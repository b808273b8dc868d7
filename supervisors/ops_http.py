"""The HTTP face of the operator services (alarms, DLQ, restart): routes that parse the
request, call the service with the caller, and map its errors to statuses.

Every route needs ``Authorization: Bearer TOKEN``: reads a viewer, actions the
role the service asks for. 401 (no valid token; a mutating call is audited as
such), 403 (role too weak; audited by the service), 400/404 from the service.
``X-Otgate-Surface`` (``cli``...) says in the audit where the call came from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from otgate.actors.records import AlarmAction, DlqDisposition
from otgate.supervisors.access import Caller, Forbidden
from otgate.supervisors.http_access import authorize, json_object, surface_of
from otgate.supervisors.service.audit import unauthenticated
from otgate.supervisors.service.dlq_view import DLQ_TOPICS, DlqFilter
from otgate.supervisors.service.errors import BadRequest, ServiceError

if TYPE_CHECKING:
    from otgate.supervisors.gateway import Gateway

Handler = Callable[[web.Request], Awaitable[web.Response]]


def reply(doc: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(doc), status=status, content_type="application/json"
    )


class OperatorRoutes:
    """``/alarms``, ``/dlq`` and component restart on the status server (see module doc)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/components/{id}/restart", self._write("component.restart", self.restart)),
            web.get("/alarms", self._read(self.alarms)),
            web.get("/alarms/{id:.+}", self._read(self.alarm)),
            web.post("/alarms/{action}", self._write("alarms.{action}", self.alarm_action)),
            web.get("/dlq", self._read(self.dlq_list)),
            web.get("/dlq/{topic}/{partition}/{offset}", self._read(self.dlq_show)),
            web.post("/dlq/{action:reprocess|discard}", self._write("dlq.{action}", self.dlq_act)),
            web.post("/dlq/revalidate", self._write("dlq.revalidate", self.dlq_revalidate)),
        ]

    # -- the request → caller → service → response frame --------------------------------
    def _read(self, fn: Callable[[web.Request, Caller], Awaitable[web.Response]]) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            caller = authorize(self.gateway, request)
            try:
                return await fn(request, caller)
            except (Forbidden, ServiceError) as exc:
                raise _http_error(exc) from None

        return handle

    def _write(
        self, action: str, fn: Callable[[web.Request, Caller, dict], Awaitable[web.Response]]
    ) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            try:
                caller = authorize(self.gateway, request, mutating=True)
            except web.HTTPUnauthorized:
                name = action.format(**request.match_info)[:60]  # alarms.{action}
                await unauthenticated(
                    self.gateway.oplog, name, surface_of(request), request.remote or ""
                )
                raise
            body = await json_object(request, optional=True)
            try:
                return await fn(request, caller, body)
            except (Forbidden, ServiceError) as exc:
                raise _http_error(exc) from None

        return handle

    async def restart(self, request: web.Request, caller: Caller, body: dict) -> web.Response:
        result = await self.gateway.ops.components.restart(caller, request.match_info["id"])
        return reply({"result": result})

    # -- alarms --------------------------------------------------------------------------
    async def alarms(self, request: web.Request, caller: Caller) -> web.Response:
        q = request.query
        found = await self.gateway.ops.alarms.list_alarms(
            caller,
            state=_csv(q.get("state", "")),
            severity=_csv(q.get("severity", "")),
            asset=q.get("asset", ""),
            area=q.get("area", ""),
        )
        return reply({"alarms": found})

    async def alarm(self, request: web.Request, caller: Caller) -> web.Response:
        return reply(await self.gateway.ops.alarms.show(caller, request.match_info["id"]))

    async def alarm_action(self, request: web.Request, caller: Caller, body: dict) -> web.Response:
        name = request.match_info["action"]
        try:
            action = AlarmAction(name.upper().replace("-", "_"))
        except ValueError:
            raise BadRequest(
                f"action {name!r}: expected one of "
                + ", ".join(a.value.lower().replace("_", "-") for a in AlarmAction)
            ) from None
        ids = body.get("alarm_ids")
        duration = body.get("duration_s")
        if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise BadRequest("alarm_ids: expected a list of alarm ids")
        occ = body.get("occurrence_ids") or {}
        if not (isinstance(occ, dict) and all(isinstance(v, str) for v in occ.values())):
            raise BadRequest("occurrence_ids: expected an object of alarm id -> occurrence id")
        wait = body.get("wait_s")
        for key, v in (("duration_s", duration), ("wait_s", wait)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise BadRequest(f"{key}: expected a number of seconds")
        result = await self.gateway.ops.alarms.act(
            caller,
            action,
            ids,
            note=text_field(body, "note"),
            duration_s=duration,
            request_id=text_field(body, "request_id"),
            wait_s=None if wait is None else float(wait),
            occurrence_ids=occ,
        )
        return reply(result, status=202 if result.status == "accepted" else 200)

    # -- DLQ -----------------------------------------------------------------------------
    async def dlq_list(self, request: web.Request, caller: Caller) -> web.Response:
        total, letters = await self.gateway.ops.dlq.list_letters(
            caller, dlq_filter(request.query), limit=query_limit(request, 100)
        )
        return reply({"total": total, "letters": letters})

    async def dlq_show(self, request: web.Request, caller: Caller) -> web.Response:
        m = request.match_info
        name = f"{m['topic']}/{m['partition']}/{m['offset']}"
        return reply(await self.gateway.ops.dlq.show(caller, name))

    async def dlq_act(self, request: web.Request, caller: Caller, body: dict) -> web.Response:
        """``reprocess`` or ``discard`` (the route's ``action``) the letters selected."""
        ids, flt = _selection(body)
        act = getattr(self.gateway.ops.dlq, request.match_info["action"])
        return reply(
            await act(
                caller,
                ids=ids,
                flt=flt,
                note=text_field(body, "note"),
                request_id=text_field(body, "request_id"),
            )
        )

    async def dlq_revalidate(
        self, request: web.Request, caller: Caller, body: dict
    ) -> web.Response:
        return reply(
            await self.gateway.ops.dlq.revalidate_all(
                caller, note=text_field(body, "note"), request_id=text_field(body, "request_id")
            )
        )


_STATUS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    404: web.HTTPNotFound,
    503: web.HTTPServiceUnavailable,
}


def _http_error(exc: Forbidden | ServiceError) -> web.HTTPException:
    if isinstance(exc, Forbidden):
        return web.HTTPForbidden(text=str(exc))
    return _STATUS.get(exc.status, web.HTTPBadRequest)(text=str(exc))


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def query_limit(request: web.Request, default: int) -> int:
    """The ``limit`` query parameter (``default`` when absent); BadRequest otherwise."""
    limit = request.query.get("limit", str(default))
    if not limit.isdigit():
        raise BadRequest("limit: expected a positive integer")
    return int(limit)


def text_field(body: dict, key: str) -> str:
    """``body[key]``, a string ("" when absent); BadRequest otherwise."""
    v = body.get(key, "")
    if not isinstance(v, str):
        raise BadRequest(f"{key}: expected a string")
    return v


def _selection(body: dict) -> tuple[list[str], DlqFilter | None]:
    ids, flt = body.get("ids"), body.get("filter")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise BadRequest("ids: expected a list of dead-letter ids (<topic>/<partition>/<offset>)")
    if flt is not None and not isinstance(flt, dict):
        raise BadRequest("filter: expected an object")
    return ids or [], (dlq_filter({k: str(v) for k, v in flt.items()}) if flt is not None else None)


FILTER_KEYS = ("topic", "reason", "asset", "parameter", "since", "until", "disposition")


def dlq_filter(params: Mapping[str, str]) -> DlqFilter:
    """A DLQ filter from query parameters (or a request's ``filter`` object):
    ``topic`` (telemetry, events), ``reason`` (prefix), ``asset``/``parameter``
    (fnmatch), ``since``/``until`` (ISO 8601 or ns), ``disposition`` (states)."""
    unknown = [k for k in params if k not in (*FILTER_KEYS, "limit")]
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown filter (have {', '.join(FILTER_KEYS)})")
    topics = tuple(t if t.startswith("dlq.") else f"dlq.{t}" for t in _csv(params.get("topic", "")))
    states = []
    for s in _csv(params.get("disposition", "")):
        try:
            states.append(DlqDisposition(s.upper()))
        except ValueError:
            raise BadRequest(
                f"disposition {s!r}: expected one of {', '.join(d.value for d in DlqDisposition)}"
            ) from None
    return DlqFilter(
        topics=topics or DLQ_TOPICS,
        reason=params.get("reason", ""),
        asset=params.get("asset", ""),
        parameter=params.get("parameter", ""),
        since_ns=_time(params, "since"),
        until_ns=_time(params, "until"),
        dispositions=tuple(states),
    )


def _time(params: Mapping[str, str], key: str) -> int | None:
    text = params.get(key, "")
    if not text:
        return None
    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{key}: expected ISO 8601 (2026-12-03T06:00:00Z) or ns") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1_000_000) * 1000
