"""HTTP routes of device write-back (added to the status server).

* ``POST /points/{asset}/{parameter}/write`` — body ``{"value": ..., "deadline_s":
  30, "request_id": "...", "wait_s": 5}``. Needs a token; the point's
  ``write.role`` decides (403 otherwise). 202 with the request (status
  PENDING / ACCEPTED) or, with ``wait_s``, 200 with its final result once it
  came within that time. A refusal at the gateway (unknown point 404, role
  403, limits 422) answers ``{"status": "REJECTED", "detail": ...}`` and
  logs nothing.
* ``GET /commands/{request_id}`` — the request as it stands (poll it).
* ``GET /assets/{asset}/shadow`` — reported / desired / delta of the asset's
  writable points.
* ``GET /points/writable`` — the writable points of the caller's assets, with
  their limits, role and ``can_write`` (whether the caller's role may).

The reads need a viewer token, like every operator read, and a token scoped
to some assets sees only theirs (403 otherwise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from otgate.supervisors.access import Caller, Role
from otgate.supervisors.http_access import authorize, json_object
from otgate.supervisors.ops_write import WriteRefused

if TYPE_CHECKING:
    from otgate.supervisors.gateway import Gateway

MAX_WAIT_S = 60.0


def write_routes(gateway: Gateway) -> list[web.RouteDef]:
    async def post_write(request: web.Request) -> web.Response:
        # the point's role decides below
        caller = authorize(gateway, request, Role.VIEWER, mutating=True)
        body = await json_object(request)
        if "value" not in body:
            raise web.HTTPBadRequest(text="body: 'value' is required")
        deadline_s = _number(body, "deadline_s")
        wait_s = min(_number(body, "wait_s") or 0.0, MAX_WAIT_S)
        rid = body.get("request_id")
        if rid is not None and (not isinstance(rid, str) or not 0 < len(rid) <= 128):
            raise web.HTTPBadRequest(text="request_id: expected a string of 1-128 characters")
        writes = gateway.writes
        try:
            view = await writes.submit(
                caller, request.match_info["asset"], request.match_info["parameter"],
                body["value"], deadline_s=deadline_s, request_id=rid,
            )
        except WriteRefused as exc:
            return web.json_response({"status": "REJECTED", "detail": exc.detail}, status=exc.http)
        if wait_s > 0:
            view = await writes.wait(view["request_id"], wait_s) or view
        return web.json_response(view, status=200 if view["final"] else 202)

    async def get_command(request: web.Request) -> web.Response:
        caller = authorize(gateway, request, Role.VIEWER)
        view = gateway.writes.view(request.match_info["request_id"])
        if view is None:
            raise web.HTTPNotFound(text="no such request (or older than the root remembers)")
        _in_scope(caller, view["asset_id"])
        return web.json_response(view)

    async def get_shadow(request: web.Request) -> web.Response:
        caller = authorize(gateway, request, Role.VIEWER)
        _in_scope(caller, request.match_info["asset"])
        try:
            doc = await gateway.writes.shadow(request.match_info["asset"])
        except WriteRefused as exc:
            raise web.HTTPNotFound(text=exc.detail) from None
        return web.json_response(doc)

    async def get_writable(request: web.Request) -> web.Response:
        caller = authorize(gateway, request, Role.VIEWER)
        return web.json_response({"points": gateway.writes.points(caller)})

    return [
        web.get("/points/writable", get_writable),
        web.post("/points/{asset}/{parameter}/write", post_write),
        web.get("/commands/{request_id}", get_command),
        web.get("/assets/{asset}/shadow", get_shadow),
    ]


def _in_scope(caller: Caller, asset_id: str) -> None:
    if not caller.in_scope(asset_id):
        raise web.HTTPForbidden(text=f"token {caller.name!r} is not scoped to asset {asset_id!r}")


def _number(body: dict[str, Any], name: str) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise web.HTTPBadRequest(text=f"{name}: expected a number of seconds")
    return float(v)
