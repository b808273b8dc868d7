"""A cloud ingest endpoint (aiohttp) for the HTTP sink: it fails, throttles and recovers.

Served in the test's event loop on an ephemeral loopback port (optionally
TLS). ``script`` holds the answers to give next ((status, headers) or
``"slow"`` = accept the batch and answer after ``slow_s``); when empty it
answers 200. ``stop()`` / ``start()`` take the port away and back (connection
refused in between). Every accepted batch is kept with its Idempotency-Key.
"""

from __future__ import annotations

import collections
import json
import ssl
import time
from typing import Any

import anyio
from aiohttp import web


class Ingest:
    def __init__(self, *, auth: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 slow_s: float = 2.0) -> None:
        self.auth = auth
        self.ssl_context = ssl_context
        self.slow_s = slow_s
        self.script: collections.deque[Any] = collections.deque()
        self.batches: list[tuple[str, list[dict]]] = []  # (key, records) accepted
        self.attempts: list[tuple[float, str, int]] = []  # (monotonic, key, status)
        self.refuse_seqs: set[int] = set()
        self.encodings: set[str] = set()
        self.content_types: set[str] = set()
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}/ingest"

    async def handle(self, req: web.Request) -> web.StreamResponse:
        key = req.headers.get("Idempotency-Key", "")
        if self.auth is not None and req.headers.get("Authorization") != self.auth:
            self.attempts.append((time.monotonic(), key, 401))
            return web.Response(status=401, text="bad credentials")
        body = await req.read()  # aiohttp undoes Content-Encoding: gzip
        if req.content_type == "application/x-ndjson":
            records = [json.loads(line) for line in body.splitlines() if line]
        else:
            doc = json.loads(body)
            assert doc["batch_id"] == key
            records = doc["records"]
        if any(r["record"]["seq"] in self.refuse_seqs for r in records):
            self.attempts.append((time.monotonic(), key, 422))
            return web.Response(status=422, text="record refused")
        answer = self.script.popleft() if self.script else (200, {})
        if answer != "slow" and answer[0] != 200:
            self.attempts.append((time.monotonic(), key, answer[0]))
            return web.Response(status=answer[0], headers=answer[1], text="try later")
        self.encodings.add(req.headers.get("Content-Encoding", ""))
        self.content_types.add(req.content_type)
        self.batches.append((key, records))
        self.attempts.append((time.monotonic(), key, 200))
        if answer == "slow":
            await anyio.sleep(self.slow_s)
        return web.Response(status=200, text="ok")

    def unique_records(self) -> list[dict]:
        """Records of the first acceptance of each Idempotency-Key (a receiver's dedupe)."""
        seen: set[str] = set()
        out = []
        for key, records in self.batches:
            if key not in seen:
                seen.add(key)
                out += records
        return out

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/ingest", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.site = web.TCPSite(self.runner, "127.0.0.1", self.port,
                                ssl_context=self.ssl_context)
        await self.site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
