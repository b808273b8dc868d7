"""A Confluent-compatible schema registry (the REST subset otgate uses), as a
test peer: an aiohttp server on an ephemeral loopback port.

No real registry (Confluent, Karapace, Redpanda) is installable here (see
PEERS.md), so this server implements the endpoints from the Confluent REST
API reference: POST /subjects/{s}/versions, POST /subjects/{s},
GET /schemas/ids/{id}, GET /subjects/{s}/versions/{v|latest}, GET /subjects.
Compatibility (BACKWARD) is checked by decoding: a record made from the old
schema's defaults must be readable with the new schema by fastavro.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio
import fastavro
import pytest
from aiohttp import web


@dataclass
class RegistryState:
    schemas: dict[int, str] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    requests: int = 0
    available: bool = True


def _backward_ok(new: str, old: str) -> bool:
    """Can a reader with ``new`` read data written with ``old``? Checked by
    resolving a sample record written with ``old`` (fastavro raises when not)."""
    try:
        old_p = fastavro.parse_schema(json.loads(old), named_schemas={})
        new_p = fastavro.parse_schema(json.loads(new), named_schemas={})
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, old_p, _sample(json.loads(old)))
        buf.seek(0)
        fastavro.schemaless_reader(buf, old_p, new_p)
        return True
    except Exception:
        return False


def _sample(schema) -> object:
    t = schema["type"] if isinstance(schema, dict) else schema
    if isinstance(schema, list):
        return _sample(schema[0])
    if t == "record":
        return {f["name"]: _sample(f["type"]) for f in schema["fields"]}
    if t == "enum":
        return schema["symbols"][0]
    return {
        "null": None,
        "boolean": False,
        "long": 0,
        "int": 0,
        "double": 0.0,
        "float": 0.0,
        "string": "",
        "bytes": b"",
        "array": [],
        "map": {},
    }.get(t)


def make_app(state: RegistryState) -> web.Application:
    def check() -> None:
        state.requests += 1
        if not state.available:
            raise web.HTTPServiceUnavailable()

    def canon(s: str) -> str:
        return json.dumps(json.loads(s), sort_keys=True, separators=(",", ":"))

    async def register(req: web.Request) -> web.Response:
        check()
        subject = req.match_info["subject"]
        text = canon((await req.json())["schema"])
        ids = state.subjects.setdefault(subject, [])
        for sid in ids:
            if state.schemas[sid] == text:
                return web.json_response({"id": sid})
        if ids and not _backward_ok(text, state.schemas[ids[-1]]):
            return web.json_response(
                {"error_code": 409, "message": "Schema being registered is incompatible"},
                status=409,
            )
        existing = [k for k, v in state.schemas.items() if v == text]
        sid = existing[0] if existing else max(state.schemas, default=0) + 1
        state.schemas[sid] = text
        ids.append(sid)
        return web.json_response({"id": sid})

    async def lookup(req: web.Request) -> web.Response:
        check()
        subject = req.match_info["subject"]
        text = canon((await req.json())["schema"])
        for v, sid in enumerate(state.subjects.get(subject, []), 1):
            if state.schemas[sid] == text:
                return web.json_response(
                    {"subject": subject, "id": sid, "version": v, "schema": text}
                )
        return web.json_response({"error_code": 40403, "message": "Schema not found"}, status=404)

    async def by_id(req: web.Request) -> web.Response:
        check()
        sid = int(req.match_info["id"])
        if sid not in state.schemas:
            return web.json_response({"error_code": 40403, "message": "not found"}, status=404)
        return web.json_response({"schema": state.schemas[sid]})

    async def version(req: web.Request) -> web.Response:
        check()
        subject = req.match_info["subject"]
        ids = state.subjects.get(subject)
        if not ids:
            return web.json_response({"error_code": 40401, "message": "no subject"}, status=404)
        v = req.match_info["version"]
        n = len(ids) if v == "latest" else int(v)
        sid = ids[n - 1]
        return web.json_response(
            {"subject": subject, "version": n, "id": sid, "schema": state.schemas[sid]}
        )

    async def subjects(req: web.Request) -> web.Response:
        check()
        return web.json_response(sorted(state.subjects))

    app = web.Application()
    app.router.add_post("/subjects/{subject}/versions", register)
    app.router.add_post("/subjects/{subject}", lookup)
    app.router.add_get("/schemas/ids/{id}", by_id)
    app.router.add_get("/subjects/{subject}/versions/{version}", version)
    app.router.add_get("/subjects", subjects)
    return app


@dataclass
class Registry:
    url: str
    state: RegistryState


@pytest.fixture
def registry() -> Iterator[Registry]:
    """The registry in a thread with its own event loop (tests may be sync or async)."""
    state = RegistryState()
    ready = threading.Event()
    box: dict = {}

    async def serve() -> None:
        runner = web.AppRunner(make_app(state))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        box["stop"] = anyio.Event()
        box["token"] = anyio.lowlevel.current_token()
        ready.set()
        await box["stop"].wait()
        await runner.cleanup()

    t = threading.Thread(target=anyio.run, args=(serve,), daemon=True)
    t.start()
    assert ready.wait(10), "registry did not start"
    try:
        yield Registry(url=f"http://127.0.0.1:{box['port']}", state=state)
    finally:
        anyio.from_thread.run_sync(box["stop"].set, token=box["token"])
        t.join(10)
