"""The gateway's HTTP client for its control plane (aiohttp): pull the config
with ETag / If-None-Match, post outcome reports. Which errors are retriable."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import msgspec

from otgate.config.control_plane.config import ControlPlaneSection
from otgate.config.control_plane.contract import (
    VERSION_HEADER,
    Report,
    config_path,
    reports_path,
)

RETRIABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_DOCUMENT = 4 * 1024 * 1024  # a config larger than this is refused, not read


class ControlPlaneError(Exception):
    """A pull or a report failed; ``retriable`` says whether trying again can help."""

    def __init__(self, message: str, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


def is_retriable(exc: BaseException) -> bool:
    """Connection trouble, timeouts, 408/429/5xx; not 4xx (a wrong token, an unknown
    gateway: trying again the same way cannot help)."""
    if isinstance(exc, ControlPlaneError):
        return exc.retriable
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.status in RETRIABLE_STATUS
    return isinstance(
        exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | TimeoutError
    )


@dataclass(frozen=True)
class Pulled:
    """One served config document."""

    body: bytes
    version: int
    etag: str


class ControlPlaneClient:
    """One HTTP session per gateway run; ``async with`` opens and closes it."""

    def __init__(self, cfg: ControlPlaneSection) -> None:
        self.cfg = cfg
        self.base = cfg.url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ControlPlaneClient:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
            headers={"Authorization": f"Bearer {self.cfg.token}"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def pull(self, etag: str | None) -> Pulled | None:
        """The served config, or None when it is still ``etag`` (304)."""
        assert self._session is not None
        headers = {"If-None-Match": etag} if etag else {}
        try:
            async with self._session.get(
                self.base + config_path(self.cfg.gateway_id), headers=headers
            ) as resp:
                if resp.status == 304:
                    return None
                self._check(resp, "pull")
                if (resp.content_length or 0) > MAX_DOCUMENT:
                    raise ControlPlaneError(f"pull: document over {MAX_DOCUMENT} bytes", False)
                version = resp.headers.get(VERSION_HEADER, "")
                if not version.isdigit():
                    raise ControlPlaneError(
                        f"pull: {VERSION_HEADER} missing or not a number", False
                    )
                body = await resp.content.read(MAX_DOCUMENT + 1)
                if len(body) > MAX_DOCUMENT:
                    raise ControlPlaneError(f"pull: document over {MAX_DOCUMENT} bytes", False)
                return Pulled(body, int(version), resp.headers.get("ETag", ""))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport("pull", exc) from None

    async def report(self, report: Report) -> None:
        assert self._session is not None
        try:
            async with self._session.post(
                self.base + reports_path(self.cfg.gateway_id),
                data=msgspec.json.encode(report),
                headers={"Content-Type": "application/json"},
            ) as resp:
                self._check(resp, "report")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport("report", exc) from None

    @staticmethod
    def _check(resp: aiohttp.ClientResponse, what: str) -> None:
        if resp.status >= 400:
            raise ControlPlaneError(
                f"{what}: HTTP {resp.status} {resp.reason}", resp.status in RETRIABLE_STATUS
            )


def _transport(what: str, exc: BaseException) -> ControlPlaneError:
    return ControlPlaneError(f"{what}: {type(exc).__name__}: {exc}", is_retriable(exc))
