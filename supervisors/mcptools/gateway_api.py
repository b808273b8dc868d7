"""The MCP server's calls to the running gateway's status endpoint.

Every call carries the token the MCP server was started with and
``X-Otgate-Surface: mcp``: the gateway identifies the caller, checks its role
and writes the audit, exactly as for the CLI. Errors keep the HTTP status
(``ApiError``) so a tool can say "403: role viewer cannot do this".
"""

from __future__ import annotations

from typing import Any

import aiohttp

from otgate.supervisors.api_client import ApiError

TIMEOUT_S = 30.0


class GatewayApi:
    """One HTTP client session to the gateway at ``url`` (see module doc)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._headers = {"X-Otgate-Surface": "mcp", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> GatewayApi:
        self._http = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()

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
        assert self._http is not None, "use GatewayApi as an async context manager"
        params = {k: str(v) for k, v in (query or {}).items() if v not in (None, "")}
        try:
            async with self._http.request(
                method, self.url + path, params=params, json=body
            ) as resp:
                if resp.status >= 400:
                    raise ApiError(resp.status, (await resp.text()).strip())
                return await resp.text() if as_text else await resp.json()
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise ApiError(0, f"cannot reach {self.url}: {exc}") from None
