"""The MCP server's calls to the running gateway's status endpoint.

Every call carries a caller's token and ``X-Otgate-Surface: mcp``: the gateway
identifies the caller, checks its role and writes the audit, exactly as for
the CLI. ``GatewayApi`` owns the HTTP client; ``as_caller(token)`` gives the
calls of one caller. Errors keep the HTTP status (``ApiError``) so a tool can
say "403: role viewer cannot do this".
"""

from __future__ import annotations

from typing import Any

import aiohttp

from otgate.supervisors.api_client import ApiError

TIMEOUT_S = 30.0


class GatewayApi:
    """One HTTP client session to the gateway at ``url`` (see module doc)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> GatewayApi:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.close()

    def as_caller(self, token: str) -> CallerApi:
        assert self.http is not None, "use GatewayApi as an async context manager"
        return CallerApi(self, token)


class CallerApi:
    """The gateway's routes called with one caller's token."""

    def __init__(self, api: GatewayApi, token: str) -> None:
        self.api = api
        self.token = token
        self._headers = {
            "X-Otgate-Surface": "mcp",
            "Accept": "application/json",
            "Authorization": f"Bearer {token}",
        }

    async def get(self, path: str, **query: Any) -> Any:
        return await self._call("GET", path, query=query)

    async def text(self, path: str) -> str:
        return await self._call("GET", path, as_text=True)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return await self._call("POST", path, body=body)

    async def note(self, name: str, target: str = "", result: str = "ok", detail: str = "") -> None:
        """Put this MCP call in the gateway's audit trail (``POST /audit/notes``)."""
        body = {"name": name, "target": target, "result": result, "detail": detail}
        await self.post("/audit/notes", body)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        as_text: bool = False,
    ) -> Any:
        assert self.api.http is not None
        params = {k: str(v) for k, v in (query or {}).items() if v not in (None, "")}
        try:
            async with self.api.http.request(
                method, self.api.url + path, params=params, json=body, headers=self._headers
            ) as resp:
                if resp.status >= 400:
                    raise ApiError(resp.status, (await resp.text()).strip())
                return await resp.text() if as_text else await resp.json()
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise ApiError(0, f"cannot reach {self.api.url}: {exc}") from None
