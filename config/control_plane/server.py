"""A reference control plane for one site (aiohttp): serves versioned configs
from a directory, keeps the gateways' reports. ``otgate control-plane serve``.

Layout of ``DIR``::

    DIR/<gateway_id>/<version>.toml    one file per version; the highest is served
    DIR/reports.jsonl                  every report received, one JSON object a line

The tokens file is TOML, one ``gateway_id = "token"`` per gateway. A token
gives access to its own gateway's config and reports only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
import tomllib
from pathlib import Path

import msgspec
from aiohttp import web

from otgate.config.control_plane.contract import TOML_TYPE, VERSION_HEADER, Report

log = logging.getLogger("otgate.control_plane.server")
REPORTS = "reports.jsonl"
MAX_REPORT = 256 * 1024
_GATEWAY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class TokenFileError(Exception):
    """The tokens file is unreadable or not ``gateway_id = "token"`` lines."""


def read_tokens(path: Path) -> dict[str, str]:
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TokenFileError(f"{path}: {exc}") from None
    bad = [k for k, v in doc.items() if not isinstance(v, str) or not v]
    if bad:
        raise TokenFileError(f"{path}: {', '.join(bad)}: expected a non-empty string token")
    odd = [k for k in doc if not _GATEWAY_ID.match(k)]  # ids name directories
    if odd:
        raise TokenFileError(f"{path}: {', '.join(odd)}: not a gateway id ({_GATEWAY_ID.pattern})")
    return doc


def latest(directory: Path) -> tuple[int, Path] | None:
    """The highest ``<version>.toml`` in a gateway's directory."""
    versions = [
        (int(p.stem), p) for p in directory.glob("*.toml") if p.stem.isdigit() and p.is_file()
    ]
    return max(versions) if versions else None


def etag(version: int, body: bytes) -> str:
    return f'"{version}-{hashlib.sha256(body).hexdigest()[:16]}"'


class ControlPlaneServer:
    def __init__(self, directory: Path, tokens: dict[str, str]) -> None:
        self.dir = directory
        self.tokens = tokens
        self.reports_file = directory / REPORTS
        self._seen = {r["id"] for r in self.read_reports()}
        self.app = web.Application(client_max_size=MAX_REPORT)
        self.app.add_routes(
            [
                web.get("/gateways/{gid}/config", self.config),
                web.post("/gateways/{gid}/reports", self.report),
                web.get("/gateways/{gid}/reports", self.reports),
            ]
        )

    def _authorize(self, request: web.Request) -> str:
        gid = request.match_info["gid"]
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expected = self.tokens.get(gid)
        if (
            scheme.lower() != "bearer"
            or expected is None
            or not hmac.compare_digest(token.encode(), expected.encode())
        ):
            log.warning("control_plane_unauthorized gateway=%s peer=%s", gid, request.remote)
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Bearer"})
        return gid

    async def config(self, request: web.Request) -> web.StreamResponse:
        gid = self._authorize(request)
        found = latest(self.dir / gid)
        if found is None:
            raise web.HTTPNotFound(text=f"no config for gateway {gid}\n")
        version, path = found
        body = path.read_bytes()
        tag = etag(version, body)
        headers = {"ETag": tag, VERSION_HEADER: str(version)}
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers=headers)
        log.info("control_plane_config_served gateway=%s version=%d", gid, version)
        return web.Response(body=body, content_type=TOML_TYPE, headers=headers)

    async def report(self, request: web.Request) -> web.Response:
        gid = self._authorize(request)
        try:
            report = msgspec.json.decode(await request.read(), type=Report)
        except msgspec.DecodeError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        if report.gateway_id != gid:
            raise web.HTTPBadRequest(text="gateway_id does not match the URL\n")
        if report.id not in self._seen:  # a retried report is kept once
            self._seen.add(report.id)
            line = {**msgspec.to_builtins(report), "received_at": time.time()}
            with self.reports_file.open("a") as f:
                f.write(json.dumps(line) + "\n")
            log.info(
                "control_plane_report gateway=%s version=%d status=%s",
                gid,
                report.version,
                report.status.value,
            )
        return web.json_response({"ok": True}, status=202)

    async def reports(self, request: web.Request) -> web.Response:
        gid = self._authorize(request)
        return web.json_response([r for r in self.read_reports() if r["gateway_id"] == gid])

    def read_reports(self) -> list[dict]:
        try:
            lines = self.reports_file.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]


async def serve(directory: Path, tokens: dict[str, str], host: str, port: int) -> None:
    """Serve until cancelled; logs ``control_plane_listening url=...`` once bound."""
    import anyio

    server = ControlPlaneServer(directory, tokens)
    runner = web.AppRunner(server.app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = site._server.sockets[0].getsockname()
        log.info("control_plane_listening url=http://%s:%d dir=%s", bound[0], bound[1], directory)
        await anyio.sleep_forever()
    finally:
        await runner.cleanup()
