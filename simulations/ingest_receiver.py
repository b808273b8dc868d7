"""A cloud ingest endpoint for ``otgate bench sinks``, run as its own process.

``python -m otgate.simulations.ingest_receiver`` listens on an ephemeral
loopback port (printed as the first line of stdout), accepts ``POST /ingest``
(JSON or NDJSON, gzip undone by aiohttp), parses every body as a real
receiver would, and answers ``GET /count`` with the records it accepted.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web


class Counter:
    def __init__(self) -> None:
        self.records = 0

    async def ingest(self, req: web.Request) -> web.Response:
        body = await req.read()
        if req.content_type == "application/x-ndjson":
            self.records += sum(1 for line in body.splitlines() if json.loads(line))
        else:
            self.records += len(json.loads(body)["records"])
        return web.Response(status=200)

    async def count(self, _req: web.Request) -> web.Response:
        return web.json_response({"records": self.records})


async def main() -> None:
    c = Counter()
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/ingest", c.ingest)
    app.router.add_get("/count", c.count)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
