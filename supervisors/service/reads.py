"""Read-only operator services: the running config (secrets hidden), the Avro
schemas per topic, the recent gateway and audit log records, and a surface's
note of its own calls in the audit trail.

Every read needs a viewer. The config is shown with every secret removed
three ways: values that came from ``${secret:...}``, every field whose name
says it holds a credential (token, password...), and the password of any
URL or ``key=value`` DSN. Nothing here changes the gateway.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable
from typing import Any

import msgspec

from otgate.actors.log.avro import avro_schema
from otgate.actors.log.schemas import SchemaUnavailable
from otgate.actors.log.topics import TOPICS
from otgate.actors.validator.actor import DECODE_ERRORS
from otgate.config.load import Loaded
from otgate.config.secrets import REDACTED, Redactor
from otgate.supervisors.access import Caller, Role
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.audit import authorize
from otgate.supervisors.service.errors import BadRequest, NotFound
from otgate.supervisors.service.tail import partitions

LOG_TOPICS = ("logs.gateway", "logs.audit")
"""The topics ``recent`` reads: what the gateway did, and who did what."""
MAX_RECENT = 1000
CREDENTIAL_KEYS = re.compile(r"token|password|passwd|secret|api_?key|credential", re.I)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.I)
_DSN_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('[^']*'|\S+)", re.I)
_NOTE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def scrub(node: Any, redactor: Redactor, key: str = "") -> Any:
    """``node`` (a decoded config tree) with every secret replaced by ``***``
    (see module doc)."""
    if isinstance(node, dict):
        return {k: scrub(v, redactor, str(k)) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [scrub(v, redactor, key) for v in node]
    if isinstance(node, str):
        if node and CREDENTIAL_KEYS.search(key):
            return REDACTED
        text = _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED + "@", redactor.text(node))
        return _DSN_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)
    return node


class ReadService:
    """The reads above over the root's operator log; ``loaded`` returns the
    config in force with its secret values (it changes on reload)."""

    def __init__(self, oplog: OperatorLog, loaded: Callable[[], Loaded]) -> None:
        self.oplog = oplog
        self._loaded = loaded

    async def config(self, caller: Caller) -> dict[str, Any]:
        """The running config as a tree, secrets removed."""
        await authorize(self.oplog, caller, Role.VIEWER, "config.show")
        loaded = self._loaded()
        tree = msgspec.to_builtins(loaded.config)
        return {
            "config_version": loaded.config.config_version,
            "source": loaded.source.value,
            "config": scrub(tree, Redactor(loaded.secrets)),
        }

    async def schemas(self, caller: Caller, topic: str = "") -> dict[str, Any]:
        """``{topic: {"record": type name, "schema": Avro schema}}`` for every
        topic (or just ``topic``): the schema the gateway writes it with."""
        await authorize(self.oplog, caller, Role.VIEWER, "schemas.show", topic)
        if topic and topic not in TOPICS:
            raise NotFound(f"no topic {topic!r} (have {', '.join(TOPICS)})")
        names = [topic] if topic else list(TOPICS)
        return {
            n: {"record": TOPICS[n][0].__name__, "schema": avro_schema(TOPICS[n][0])}
            for n in names
        }

    async def recent(self, caller: Caller, topic: str, limit: int = 50) -> list[dict[str, Any]]:
        """The last ``limit`` records of ``logs.gateway`` or ``logs.audit``
        (oldest first, by gateway time), each with its position."""
        await authorize(self.oplog, caller, Role.VIEWER, "logs.read", topic)
        if topic not in LOG_TOPICS:
            raise BadRequest(f"topic {topic!r}: expected one of {', '.join(LOG_TOPICS)}")
        if not 0 < limit <= MAX_RECENT:
            raise BadRequest(f"limit: expected 1..{MAX_RECENT}")
        backend = await self.oplog.backend()
        assert self.oplog.decoder is not None
        marks = await backend.watermarks(topic)
        newest: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
        for p in range(await partitions(self.oplog, topic)):
            low, high = marks.get(p, (0, 0))
            offset = max(low, high - limit)
            while recs := await backend.read(topic, p, offset, limit):
                for rec in recs:
                    try:
                        obj = await self.oplog.decoder.decode_async(topic, rec.value)
                    except (*DECODE_ERRORS, SchemaUnavailable):
                        continue  # one bad record never hides the others
                    doc = {"partition": rec.partition, "offset": rec.offset}
                    doc.update(msgspec.to_builtins(obj))
                    newest.append((doc.get("gateway_time", 0), doc))
                offset = recs[-1].offset + 1
        return [doc for _t, doc in sorted(newest, key=lambda x: x[0])[-limit:]]

    async def note(
        self, caller: Caller, name: str, target: str = "", result: str = "ok", detail: str = ""
    ) -> None:
        """Audit a call a surface answered without an action of its own (a read,
        a preview, a refused confirmation): action ``<surface>.<name>``, by the
        caller the token names, so nobody can write as someone else."""
        await authorize(self.oplog, caller, Role.VIEWER, f"{caller.surface}.note")
        if not _NOTE_NAME.match(name):
            raise BadRequest("name: expected 1-40 of a-z, 0-9, _ (starting with a letter)")
        await self.oplog.audit(
            caller, f"{caller.surface}.{name}", target[:200], result=result[:200], detail=detail
        )
