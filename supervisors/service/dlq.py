"""The DLQ workflow (issue 10 item 1): list, show, reprocess, discard, re-validate all.

Reprocessing runs a dead letter's reading through the CURRENT validator rules
(a fresh ``RuleSet``: the range, type and time rules apply; rate, gap and
duplicate rules need the stream's history, which a single record does not
have). If it passes, it is appended to ``<x>.clean``; if not, it stays, with
the new reason. Every step is a ``DispositionRecord`` on ``dlq.dispositions``.

Exactly once in ``*.clean`` (intent, append, done; a crash in between is
resumed by the next call): see ``dlq_apply.py``. One lock serialises
mutations in the root, so two operators cannot race.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import msgspec

from otgate.actors.records import DeadLetter, DispositionRecord, DlqDisposition
from otgate.actors.validator.config import ValidatorConfig
from otgate.supervisors.access import Caller, Role, require_scope
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.audit import audit_refusals, authorize
from otgate.supervisors.service.dlq_apply import Applier
from otgate.supervisors.service.dlq_view import (
    MAX_OUTCOMES,
    BulkResult,
    DlqFilter,
    LetterView,
    Outcome,
    letter_id,
    parse_id,
)
from otgate.supervisors.service.errors import BadRequest, NotFound
from otgate.supervisors.service.tail import TopicTail, partitions, read_at, scan

D = DlqDisposition
MAX_LIST = 10_000


class DlqService:
    """The DLQ actions of every operator surface (see module doc).

    ``rules`` returns the validator config in force now (it changes on reload);
    a bulk call writes ``chunk`` letters per append.
    """

    def __init__(
        self, oplog: OperatorLog, rules: Callable[[], ValidatorConfig], *, chunk: int = 500
    ) -> None:
        self.oplog = oplog
        self.rules = rules
        self.chunk = chunk
        self.state: dict[str, DispositionRecord] = {}
        self._tail = TopicTail(oplog, "dlq.dispositions")
        self._lock = anyio.Lock()

    async def _refresh(self) -> None:
        for _rec, d in await self._tail.poll():
            key = letter_id(d.dlq_topic, d.dlq_partition, d.dlq_offset)
            self.state[key] = d

    def _state(self, key: str) -> DlqDisposition:
        d = self.state.get(key)
        return d.state if d is not None else D.PENDING

    async def _letters(self, caller: Caller, flt: DlqFilter) -> Any:
        """``(name, letter)`` of every letter ``flt`` selects in ``caller``'s scope."""
        for topic in flt.topics:
            async for rec, letter in scan(self.oplog, topic):
                key = letter_id(topic, rec.partition, rec.offset)
                if flt.matches(letter, self._state(key)) and caller.in_scope(
                    letter.reading.asset_id
                ):
                    yield key, letter

    # -- read ---------------------------------------------------------------------------
    async def list_letters(
        self, caller: Caller, flt: DlqFilter, *, limit: int = 100
    ) -> tuple[int, list[LetterView]]:
        """``(how many match, the first `limit` of them in log order)``."""
        await authorize(self.oplog, caller, Role.VIEWER, "dlq.list")
        if not 0 < limit <= MAX_LIST:
            raise BadRequest(f"limit: expected 1..{MAX_LIST}")
        await self._refresh()
        total, out = 0, []
        async for key, letter in self._letters(caller, flt):
            total += 1
            if len(out) < limit:
                out.append(self._view(key, letter))
        return total, out

    def _view(self, key: str, letter: DeadLetter) -> LetterView:
        last = self.state.get(key)
        return LetterView(
            id=key, letter=letter, disposition=last.state if last else D.PENDING, last=last
        )

    async def show(self, caller: Caller, name: str) -> dict[str, Any]:
        """The letter, its disposition history and the original record it points
        at (``original`` is None when the raw topic no longer holds it)."""
        await authorize(self.oplog, caller, Role.VIEWER, "dlq.show", name)
        letter = await self._letter(name)
        require_scope(caller, [letter.reading.asset_id])
        await self._refresh()
        original = None
        if letter.source_topic and letter.source_offset >= 0:
            original = await read_at(
                self.oplog, letter.source_topic, letter.source_partition, letter.source_offset
            )
        return {
            **msgspec.structs.asdict(self._view(name, letter)),
            "original": original,
            "history": [  # read back when asked: only the last step per letter is kept
                d
                async for _rec, d in scan(self.oplog, "dlq.dispositions")
                if letter_id(d.dlq_topic, d.dlq_partition, d.dlq_offset) == name
            ],
        }

    async def _letter(self, name: str) -> DeadLetter:
        topic, partition, offset = parse_id(name)
        if partition >= await partitions(self.oplog, topic):
            raise NotFound(f"no dead letter {name!r}")
        letter = await read_at(self.oplog, topic, partition, offset)
        if letter is None:
            raise NotFound(f"no dead letter {name!r}")
        return letter

    # -- mutate -------------------------------------------------------------------------
    async def reprocess(
        self,
        caller: Caller,
        *,
        ids: Iterable[str] = (),
        flt: DlqFilter | None = None,
        note: str = "",
        request_id: str = "",
    ) -> BulkResult:
        """Re-validate the letters named by ``ids`` or selected by ``flt`` against
        the current rules; passing ones go to ``*.clean`` exactly once."""
        return await self._mutate(
            caller, "dlq.reprocess", Role.OPERATOR, ids, flt, note, request_id, "reprocess"
        )

    async def revalidate_all(
        self, caller: Caller, *, note: str = "", request_id: str = ""
    ) -> BulkResult:
        """Reprocess every pending letter of both DLQs (after a rule change)."""
        flt = DlqFilter(dispositions=(D.PENDING, D.REPROCESSING))
        return await self._mutate(
            caller, "dlq.revalidate", Role.ENGINEER, (), flt, note, request_id, "reprocess"
        )

    async def discard(
        self,
        caller: Caller,
        *,
        ids: Iterable[str] = (),
        flt: DlqFilter | None = None,
        note: str = "",
        request_id: str = "",
    ) -> BulkResult:
        """Mark letters as never to be reprocessed (a disposition only)."""
        return await self._mutate(
            caller, "dlq.discard", Role.OPERATOR, ids, flt, note, request_id, "discard"
        )

    async def _mutate(
        self,
        caller: Caller,
        action: str,
        needed: Role,
        ids: Iterable[str],
        flt: DlqFilter | None,
        note: str,
        request_id: str,
        step: str,
    ) -> BulkResult:
        request_id = request_id or uuid.uuid4().hex
        ids = list(ids)
        target = ",".join(ids)[:200] if ids else _describe(flt)
        await authorize(self.oplog, caller, needed, action, target, request_id)
        outcomes: list[Outcome] = []
        async with audit_refusals(self.oplog, caller, action, target, request_id):
            if bool(ids) == (flt is not None):
                raise BadRequest("give either ids or a filter")
            for name in ids:
                parse_id(name)
            async with self._lock:
                await self._refresh()
                apply = Applier(self.oplog, self.rules, self.state, caller, request_id, note)
                resumed = await apply.resume_all()
                outcomes += resumed.values()
                if ids:
                    selected = [(name, await self._letter(name)) for name in ids]
                else:
                    assert flt is not None
                    selected = [(k, lt) async for k, lt in self._letters(caller, flt)]
                require_scope(caller, [lt.reading.asset_id for _k, lt in selected])
                todo = [(k, lt) for k, lt in selected if k not in resumed]
                for i in range(0, len(todo), self.chunk):
                    outcomes += await getattr(apply, step)(todo[i : i + self.chunk])
        counts = dict(collections.Counter(o.result for o in outcomes))
        detail = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        await self.oplog.audit(caller, action, target, detail=detail, request_id=request_id)
        return BulkResult(
            request_id=request_id,
            counts=counts,
            outcomes=outcomes[:MAX_OUTCOMES],
            omitted=max(0, len(outcomes) - MAX_OUTCOMES),
        )


def _describe(flt: DlqFilter | None) -> str:
    if flt is None:
        return ""
    parts = [f"topics={','.join(flt.topics)}"]
    for name in ("reason", "asset", "parameter", "since_ns", "until_ns"):
        v = getattr(flt, name)
        if v not in ("", None):
            parts.append(f"{name}={v}")
    if flt.dispositions:
        parts.append("dispositions=" + ",".join(d.value for d in flt.dispositions))
    return " ".join(parts)[:200]
