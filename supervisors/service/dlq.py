"""The DLQ workflow (issue 10 item 1): list, show, reprocess, discard, re-validate all.

Reprocessing runs a dead letter's reading through the CURRENT validator rules
(a fresh ``RuleSet``: the range, type and time rules apply; rate, gap and
duplicate rules need the stream's history, which a single record does not
have). If it passes, it is appended to ``<x>.clean``; if not, it stays, with
the new reason. Every step is a ``DispositionRecord`` on ``dlq.dispositions``.

Exactly once in ``*.clean``, with no transaction between two topics:

1. ``REPROCESSING`` (intent) names the clean partition and a lower bound of
   its next offset, *before* the reading is appended;
2. the reading is appended to ``*.clean``;
3. ``REPROCESSED`` is appended. A letter REPROCESSED or DISCARDED is never
   touched again (a second reprocess is a no-op).

A crash between 1 and 3 leaves the intent as the letter's last record. The
next mutating call (of any surface, after a restart too) first resumes such
intents: it searches the named partition from the bound for the reading and
appends it only if it is not there, then writes REPROCESSED. A bulk call
interrupted half way is resumed by repeating it: done letters are no-ops.
One lock serialises mutations in the root, so two operators cannot race.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import msgspec

from otgate.actors.log.partition import partition_for
from otgate.actors.records import DeadLetter, DispositionRecord, DlqDisposition, Reading, now_ns
from otgate.actors.validator.config import ValidatorConfig
from otgate.actors.validator.rules import RuleSet
from otgate.supervisors.access import Caller, Forbidden, Role, require_scope
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.audit import authorize
from otgate.supervisors.service.dlq_view import (
    BulkResult,
    DlqFilter,
    LetterView,
    Outcome,
    clean_topic,
    letter_id,
    parse_id,
    same_reading,
)
from otgate.supervisors.service.errors import BadRequest, NotFound, ServiceError
from otgate.supervisors.service.tail import TopicTail, partitions, read_at, scan

D = DlqDisposition
FINAL = (D.REPROCESSED, D.DISCARDED)
UNDECODED = ("undecodable", "unknown_schema")
"""Reasons of letters the validator could not decode (their reading is a placeholder)."""
MAX_LIST = 10_000


class DlqService:
    """The DLQ actions of every operator surface (see module doc).

    ``rules`` returns the validator config in force now (it changes on reload).
    """

    def __init__(self, oplog: OperatorLog, rules: Callable[[], ValidatorConfig]) -> None:
        self.oplog = oplog
        self.rules = rules
        self.state: dict[str, DispositionRecord] = {}
        self.history: dict[str, list[DispositionRecord]] = collections.defaultdict(list)
        self._tail = TopicTail(oplog, "dlq.dispositions")
        self._lock = anyio.Lock()

    async def _refresh(self) -> None:
        for _rec, d in await self._tail.poll():
            key = letter_id(d.dlq_topic, d.dlq_partition, d.dlq_offset)
            self.state[key] = d
            self.history[key].append(d)

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
            "history": list(self.history.get(name, [])),
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
            caller, "dlq.reprocess", Role.OPERATOR, ids, flt, note, request_id, self._reprocess
        )

    async def revalidate_all(
        self, caller: Caller, *, note: str = "", request_id: str = ""
    ) -> BulkResult:
        """Reprocess every pending letter of both DLQs (after a rule change)."""
        flt = DlqFilter(dispositions=(D.PENDING, D.REPROCESSING))
        return await self._mutate(
            caller, "dlq.revalidate", Role.ENGINEER, (), flt, note, request_id, self._reprocess
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
            caller, "dlq.discard", Role.OPERATOR, ids, flt, note, request_id, self._discard
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
        step: Callable[..., Any],
    ) -> BulkResult:
        request_id = request_id or uuid.uuid4().hex
        ids = list(ids)
        target = ",".join(ids)[:200] if ids else _describe(flt)
        await authorize(self.oplog, caller, needed, action, target, request_id)
        outcomes: list[Outcome] = []
        try:
            if bool(ids) == (flt is not None):
                raise BadRequest("give either ids or a filter")
            for name in ids:
                parse_id(name)
            async with self._lock:
                await self._refresh()
                resumed = await self._resume_all(caller, request_id)
                outcomes += resumed.values()
                if ids:
                    selected = [(name, await self._letter(name)) for name in ids]
                else:
                    assert flt is not None
                    selected = [(k, lt) async for k, lt in self._letters(caller, flt)]
                require_scope(caller, [lt.reading.asset_id for _k, lt in selected])
                for key, letter in selected:
                    if key not in resumed:
                        outcomes.append(await step(caller, key, letter, note, request_id))
        except Forbidden as exc:  # out of the token's asset scope
            await self.oplog.audit(
                caller, action, target, result="refused", detail=str(exc), request_id=request_id
            )
            raise
        except ServiceError as exc:
            await self.oplog.audit(
                caller, action, target, result=f"error: {exc}", request_id=request_id
            )
            raise
        counts = dict(collections.Counter(o.result for o in outcomes))
        detail = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        await self.oplog.audit(caller, action, target, detail=detail, request_id=request_id)
        return BulkResult(request_id=request_id, counts=counts, outcomes=outcomes)

    async def _record(
        self, caller: Caller, key: str, state: DlqDisposition, request_id: str, **fields: Any
    ) -> DispositionRecord:
        topic, partition, offset = parse_id(key)
        rec = DispositionRecord(
            dlq_topic=topic,
            dlq_partition=partition,
            dlq_offset=offset,
            state=state,
            by=caller.name,
            role=caller.role.value,
            source=caller.source or caller.surface,
            request_id=request_id,
            gateway_time=now_ns(),
            **fields,
        )
        await self.oplog.append("dlq.dispositions", key, rec)
        self.state[key] = rec
        return rec

    async def _discard(
        self, caller: Caller, key: str, letter: DeadLetter, note: str, request_id: str
    ) -> Outcome:
        if self._state(key) in FINAL or self._state(key) is D.REPROCESSING:
            return Outcome(id=key, result="unchanged", reason=self._state(key).value)
        await self._record(caller, key, D.DISCARDED, request_id, note=note[:500])
        return Outcome(id=key, result="discarded")

    async def _reprocess(
        self, caller: Caller, key: str, letter: DeadLetter, note: str, request_id: str
    ) -> Outcome:
        last = self.state.get(key)
        if last is not None and last.state in FINAL:
            return Outcome(id=key, result="unchanged", reason=last.state.value)
        if last is not None and last.state is D.REPROCESSING:
            return await self._resume(caller, key, letter, last, request_id)
        reading, reason = await self._check(letter)
        if reading is None:
            await self._record(caller, key, D.PENDING, request_id, reason=reason, note=note[:500])
            return Outcome(id=key, result="refused", reason=reason)
        topic = clean_topic(key.partition("/")[0])
        part = partition_for(reading.asset_id.encode(), await partitions(self.oplog, topic))
        start = (await (await self.oplog.backend()).watermarks(topic))[part][1]
        await self._record(
            caller,
            key,
            D.REPROCESSING,
            request_id,
            clean_topic=topic,
            clean_partition=part,
            clean_from=start,
            note=note[:500],
        )
        await self.oplog.append(topic, reading.asset_id, reading)
        await self._record(caller, key, D.REPROCESSED, request_id, clean_topic=topic)
        return Outcome(id=key, result="reprocessed", clean_topic=topic)

    async def _check(self, letter: DeadLetter) -> tuple[Reading | None, str]:
        """The letter's reading as the current rules pass it, or None and why not."""
        reading = await self._original(letter)
        if reading is None:
            return None, letter.reason
        verdict = RuleSet(self.rules()).check(reading)
        if verdict.reading is None:
            return None, verdict.reject or "dropped"
        return verdict.reading, ""

    async def _original(self, letter: DeadLetter) -> Reading | None:
        """The reading the letter stands for. A letter the validator could not
        decode holds a placeholder: its source record is decoded again (its
        schema may be known by now); None when it still cannot be."""
        if letter.reason not in UNDECODED:
            return letter.reading
        original = None
        if letter.source_topic and letter.source_offset >= 0:
            original = await read_at(
                self.oplog, letter.source_topic, letter.source_partition, letter.source_offset
            )
        return original if isinstance(original, Reading) else None

    async def _resume(
        self,
        caller: Caller,
        key: str,
        letter: DeadLetter,
        intent: DispositionRecord,
        request_id: str,
    ) -> Outcome:
        """Finish an interrupted reprocess: append the reading only if the intent's
        partition does not hold it yet."""
        topic = intent.clean_topic
        original = await self._original(letter)
        async for _rec, found in scan(
            self.oplog, topic, partition=intent.clean_partition, start=intent.clean_from
        ):
            if original is not None and same_reading(found, original):
                break
        else:
            reading, reason = await self._check(letter)
            if reading is None:  # the rules changed since: it stays in the DLQ
                await self._record(caller, key, D.PENDING, request_id, reason=reason)
                return Outcome(id=key, result="refused", reason=reason)
            await self.oplog.append(topic, reading.asset_id, reading)
        await self._record(caller, key, D.REPROCESSED, request_id, clean_topic=topic)
        return Outcome(id=key, result="resumed", clean_topic=topic)

    async def _resume_all(self, caller: Caller, request_id: str) -> dict[str, Outcome]:
        """Finish every interrupted reprocess (see module doc)."""
        out = {}
        for key, d in list(self.state.items()):
            if d.state is D.REPROCESSING:
                letter = await read_at(self.oplog, d.dlq_topic, d.dlq_partition, d.dlq_offset)
                if letter is not None:
                    out[key] = await self._resume(caller, key, letter, d, request_id)
        return out


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
