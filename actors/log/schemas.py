"""Where schema ids come from: the embedded log's schema table, or a
Confluent-compatible registry (Redpanda's built-in one) behind a disk cache.

``SchemaStore.register(subject, schema)`` returns the id written after the
magic byte; ``get(id)`` returns the schema text a reader needs. Subjects follow
the TopicNameStrategy: ``<topic>-value``.

The registry store answers from its cache file first, so a gateway that
registered its schemas once starts and writes with the registry unreachable.
A schema never seen before needs the registry (``SchemaUnavailable``, which is
retriable). Without a registry URL the cache file alone assigns ids (local to
this gateway; a ``flock`` keeps processes from handing out the same id).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import anyio

from otgate.actors.log.avro import canonical

log = logging.getLogger("otgate.log")

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaUnavailable(Exception):
    """No id for a schema (or no schema for an id): registry unreachable, not cached."""

    retriable = True


class SchemaRejected(Exception):
    """The registry refused the schema (e.g. 409: not BACKWARD compatible)."""

    retriable = False


def subject_for(topic: str) -> str:
    return f"{topic}-value"


class SchemaStore(Protocol):
    async def register(self, subject: str, schema: str | dict[str, Any]) -> int: ...

    async def get(self, schema_id: int) -> str: ...

    def cached(self, schema_id: int) -> str | None: ...


class EmbeddedSchemaStore:
    """The embedded log's own schema table (ids shared by every process on the file)."""

    def __init__(self, log_: Any) -> None:
        self._log = log_
        self._by_id: dict[int, str] = {}

    async def register(self, subject: str, schema: str | dict[str, Any]) -> int:
        text = canonical(schema)
        sid = await self._log.register_schema(subject, text)
        self._by_id[sid] = text
        return sid

    async def get(self, schema_id: int) -> str:
        text = self._by_id.get(schema_id) or await self._log.schema_by_id(schema_id)
        if text is None:
            raise SchemaUnavailable(f"schema id {schema_id} not in the embedded schema table")
        self._by_id[schema_id] = text
        return text

    def cached(self, schema_id: int) -> str | None:
        return self._by_id.get(schema_id)


class RegistrySchemaStore:
    """Confluent REST registry client with an on-disk cache (see module docstring)."""

    def __init__(self, url: str | None, cache_path: Path, *, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/") if url else None
        self.cache_path = Path(cache_path)
        self.timeout_s = timeout_s
        self._ids: dict[int, str] = {}
        self._subjects: dict[str, dict[str, int]] = {}
        self._loaded = False

    # -- cache file -------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.cache_path}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read_file(self) -> None:
        try:
            data = json.loads(self.cache_path.read_text())
        except FileNotFoundError:
            data = {}
        except ValueError:
            log.warning("schema_cache_corrupt path=%s", self.cache_path)
            data = {}
        for k, v in data.get("ids", {}).items():
            self._ids[int(k)] = v
        for subj, m in data.get("subjects", {}).items():
            self._subjects.setdefault(subj, {}).update(m)
        self._loaded = True

    def _write_file(self) -> None:
        tmp = self.cache_path.with_suffix(self.cache_path.suffix + ".tmp")
        tmp.write_text(
            json.dumps(
                {"ids": {str(k): v for k, v in self._ids.items()}, "subjects": self._subjects},
                indent=1,
            )
        )
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.cache_path)

    def _remember(self, subject: str | None, text: str, sid: int) -> None:
        with self._locked():
            self._read_file()
            self._ids[sid] = text
            if subject:
                self._subjects.setdefault(subject, {})[text] = sid
            self._write_file()

    def _load(self) -> None:
        if not self._loaded:
            with self._locked():
                self._read_file()

    # -- API --------------------------------------------------------------------
    async def register(self, subject: str, schema: str | dict[str, Any]) -> int:
        text = canonical(schema)
        await anyio.to_thread.run_sync(self._load)
        sid = self._subjects.get(subject, {}).get(text)
        if sid is not None:
            return sid
        if self.url is None:
            return await anyio.to_thread.run_sync(self._assign_local, subject, text)
        body = await self._request("POST", f"/subjects/{subject}/versions", {"schema": text})
        sid = int(body["id"])
        await anyio.to_thread.run_sync(self._remember, subject, text, sid)
        log.info("schema_registered subject=%s id=%d", subject, sid)
        return sid

    def _assign_local(self, subject: str, text: str) -> int:
        with self._locked():
            self._read_file()
            sid = self._subjects.get(subject, {}).get(text)
            if sid is None:
                sid = max(self._ids, default=0) + 1
                self._ids[sid] = text
                self._subjects.setdefault(subject, {})[text] = sid
                self._write_file()
            return sid

    async def get(self, schema_id: int) -> str:
        text = self.cached(schema_id)
        if text is None:
            await anyio.to_thread.run_sync(self._read_file_locked)
            text = self._ids.get(schema_id)
        if text is not None:
            return text
        if self.url is None:
            raise SchemaUnavailable(f"schema id {schema_id} not in {self.cache_path}")
        body = await self._request("GET", f"/schemas/ids/{schema_id}")
        text = canonical(body["schema"])
        await anyio.to_thread.run_sync(self._remember, None, text, schema_id)
        return text

    def _read_file_locked(self) -> None:
        with self._locked():
            self._read_file()

    def cached(self, schema_id: int) -> str | None:
        if not self._loaded:
            self._load()
        return self._ids.get(schema_id)

    async def latest(self, subject: str) -> tuple[int, str]:
        """The registry's latest ``(id, schema)`` of a subject."""
        body = await self._request("GET", f"/subjects/{subject}/versions/latest")
        return int(body["id"]), canonical(body["schema"])

    async def _request(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        import aiohttp  # ~90 ms to import; only a registry needs it

        assert self.url is not None
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as s,
                s.request(
                    method,
                    self.url + path,
                    json=payload,
                    headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
                ) as r,
            ):
                text = await r.text()
                try:
                    body = json.loads(text)
                except ValueError:
                    raise SchemaUnavailable(f"{method} {path}: {r.status} {text[:200]!r}") from None
                if r.status == 409 or r.status == 422:
                    raise SchemaRejected(f"{method} {path}: {r.status} {body}")
                if r.status >= 400:
                    raise SchemaUnavailable(f"{method} {path}: {r.status} {body}")
                return body
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise SchemaUnavailable(f"registry {self.url} unreachable: {e!r}") from e
