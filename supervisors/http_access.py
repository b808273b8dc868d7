"""Who is calling the status server: every route that needs a token (operator,
read, write, console, fault) turns its request into a ``Caller`` here, so the
HTTP surface has one token lookup and one mapping of access errors to statuses.

``Authorization: Bearer TOKEN`` is looked up among the tokens in force now (a
reload may have removed one); ``X-Otgate-Surface`` (cli, console, mcp; default
http, cut to 20 characters) and the peer address say in the audit where the
call came from. 401: no valid token; 403: role too weak; 503: a mutating call
while the gateway stops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from otgate.supervisors.access import Caller, Forbidden, Role, Unauthorized, identify, require

if TYPE_CHECKING:
    from otgate.supervisors.gateway import Gateway

SURFACE_HEADER = "X-Otgate-Surface"


def surface_of(request: web.Request) -> str:
    """The surface the call says it came from (``http`` when it says nothing)."""
    return request.headers.get(SURFACE_HEADER, "http")[:20]


def identify_request(gateway: Gateway, request: web.Request) -> Caller:
    """The caller of ``request``; raises ``Unauthorized`` (for a route that
    handles it itself: audits it, or ends a stream)."""
    return identify(
        gateway.config.status.tokens,
        request.headers.get("Authorization", "").removeprefix("Bearer "),
        surface=surface_of(request),
        source=request.remote or "",
    )


def authorize(
    gateway: Gateway, request: web.Request, needed: Role = Role.VIEWER, *, mutating: bool = False
) -> Caller:
    """The caller of ``request`` if its role is at least ``needed``: raises
    HTTP 401 / 403, and with ``mutating`` 503 while the gateway stops."""
    try:
        caller = require(identify_request(gateway, request), needed)
    except Unauthorized as exc:
        raise web.HTTPUnauthorized(text=str(exc)) from None
    except Forbidden as exc:
        raise web.HTTPForbidden(text=str(exc)) from None
    if mutating and gateway.stopping:
        raise web.HTTPServiceUnavailable(text="the gateway is stopping")
    return caller


async def json_object(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's body, which must be a JSON object (HTTP 400 otherwise);
    with ``optional`` a request without a body is an empty object."""
    if optional and not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body: expected a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body: expected a JSON object")
    return body
