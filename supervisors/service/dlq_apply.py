"""Writing dispositions: reprocess, discard, and resuming an interrupted reprocess.

Exactly once in ``*.clean``, with no transaction between two topics. For a
chunk of letters (one append per step, so a bulk of thousands costs a few
fsyncs per chunk, not per letter):

1. ``REPROCESSING`` intents name each reading's clean partition and a lower
   bound of its next offset, *before* the readings are appended;
2. the readings are appended to ``*.clean``;
3. ``REPROCESSED`` is appended. A letter REPROCESSED or DISCARDED is never
   touched again (a second reprocess is a no-op).

A crash between 1 and 3 leaves intents as the letters' last records.
``resume_all`` (run first by every mutating call, after a restart too)
searches each named partition from the lowest bound for the readings, appends
only those not there, then writes REPROCESSED. A bulk call interrupted half
way is resumed by repeating it: the letters done are no-ops.

Letters of one source record (the validator, at-least-once, dead-letters a
replayed batch again) are one reading: the first reprocessed goes to
``*.clean``, the others are marked REPROCESSED as its duplicates. A validator
that replays a refused record after a rule change passes it to ``*.clean``
itself; reprocessing its letter then adds a second copy (not detected here;
the sinks' upsert on (asset, parameter, device time) absorbs it).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any

from otgate.actors.log.partition import partition_for
from otgate.actors.records import DeadLetter, DispositionRecord, DlqDisposition, Reading, now_ns
from otgate.actors.validator.config import ValidatorConfig
from otgate.actors.validator.rules import RuleSet
from otgate.supervisors.access import Caller
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.dlq_view import Outcome, clean_topic, identity, parse_id
from otgate.supervisors.service.tail import read_at, scan

D = DlqDisposition
FINAL = (D.REPROCESSED, D.DISCARDED)
UNDECODED = ("undecodable", "unknown_schema")
"""Reasons of letters the validator could not decode (their reading is a placeholder)."""

Letters = Sequence[tuple[str, DeadLetter]]


def source_of(letter: DeadLetter) -> str:
    """``<topic>/<partition>/<offset>`` of the record a letter came from ("" if unknown)."""
    if not letter.source_topic or letter.source_offset < 0:
        return ""
    return f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset}"


class Applier:
    """Appends disposition steps for one caller's call and keeps ``state`` (the
    last disposition per letter name) current."""

    def __init__(
        self,
        oplog: OperatorLog,
        rules: Callable[[], ValidatorConfig],
        state: dict[str, DispositionRecord],
        caller: Caller,
        request_id: str,
        note: str,
    ) -> None:
        self.oplog = oplog
        self.rules = rules
        self.state = state
        self.caller = caller
        self.request_id = request_id
        self.note = note[:500]
        # source record -> the letter reprocessed for it (a replaying validator
        # can dead-letter one raw record twice; its reading goes to *.clean once)
        self.sources = {
            d.source: k
            for k, d in state.items()
            if d.source and d.state in (D.REPROCESSING, D.REPROCESSED) and not d.reason
        }

    def _state(self, key: str) -> DlqDisposition:
        d = self.state.get(key)
        return d.state if d is not None else D.PENDING

    async def _record(self, steps: list[tuple[str, DlqDisposition, dict[str, Any]]]) -> None:
        """Append one disposition record per ``(letter name, state, fields)``."""
        recs = []
        for key, state, fields in steps:
            topic, partition, offset = parse_id(key)
            rec = DispositionRecord(
                dlq_topic=topic,
                dlq_partition=partition,
                dlq_offset=offset,
                state=state,
                by=self.caller.name,
                role=self.caller.role.value,
                origin=self.caller.source or self.caller.surface,
                request_id=self.request_id,
                gateway_time=now_ns(),
                **fields,
            )
            recs.append((key, rec))
        await self.oplog.append_many("dlq.dispositions", recs)
        self.state.update(recs)

    # -- discard ------------------------------------------------------------------------
    async def discard(self, chunk: Letters) -> list[Outcome]:
        out, steps = [], []
        for key, _letter in chunk:
            st = self._state(key)
            if st is not D.PENDING:
                out.append(Outcome(id=key, result="unchanged", reason=st.value))
                continue
            steps.append((key, D.DISCARDED, {"note": self.note}))
            out.append(Outcome(id=key, result="discarded"))
        await self._record(steps)
        return out

    # -- reprocess ----------------------------------------------------------------------
    async def reprocess(self, chunk: Letters) -> list[Outcome]:
        out: dict[str, Outcome] = {}
        refused, passing = [], []
        for key, letter in chunk:
            st = self._state(key)
            if st is not D.PENDING:  # REPROCESSING was resumed before any chunk
                out[key] = Outcome(id=key, result="unchanged", reason=st.value)
                continue
            src = source_of(letter)
            if src in self.sources:
                reason = f"duplicate of {self.sources[src]}"
                refused.append((key, D.REPROCESSED, {"reason": reason, "source": src}))
                out[key] = Outcome(id=key, result="duplicate", reason=reason)
                continue
            reading, reason = await self.check(letter)
            if reading is None:
                refused.append((key, D.PENDING, {"reason": reason, "note": self.note}))
                out[key] = Outcome(id=key, result="refused", reason=reason)
            else:
                if src:
                    self.sources[src] = key
                passing.append((key, clean_topic(key.partition("/")[0]), reading, src))
        await self._record(refused)
        if passing:
            backend = await self.oplog.backend()
            marks = {t: await backend.watermarks(t) for t in {p[1] for p in passing}}
            intents = []
            for key, topic, reading, src in passing:
                part = partition_for(reading.asset_id.encode(), len(marks[topic]))
                where = {"clean_topic": topic, "clean_partition": part, "note": self.note}
                where["source"] = src
                intents.append(
                    (key, D.REPROCESSING, {**where, "clean_from": marks[topic][part][1]})
                )
            await self._record(intents)
            for topic in marks:
                await self.oplog.append_many(
                    topic, [(p[2].asset_id, p[2]) for p in passing if p[1] == topic]
                )
            await self._record(
                [(k, D.REPROCESSED, {"clean_topic": t, "source": src}) for k, t, _r, src in passing]
            )
            for key, topic, _r, _src in passing:
                out[key] = Outcome(id=key, result="reprocessed", clean_topic=topic)
        return [out[key] for key, _letter in chunk]

    async def check(self, letter: DeadLetter) -> tuple[Reading | None, str]:
        """The letter's reading as the current rules pass it (a fresh RuleSet:
        no stream history), or None and why not."""
        reading = await self.original(letter)
        if reading is None:
            return None, letter.reason
        verdict = RuleSet(self.rules()).check(reading)
        if verdict.reading is None:
            return None, verdict.reject or "dropped"
        return verdict.reading, ""

    async def original(self, letter: DeadLetter) -> Reading | None:
        """The reading the letter stands for. A letter the validator could not
        decode holds a placeholder: its source record is decoded again (its
        schema may be known by now); None when it still cannot be."""
        if letter.reason not in UNDECODED:
            return letter.reading
        found = None
        if letter.source_topic and letter.source_offset >= 0:
            found = await read_at(
                self.oplog, letter.source_topic, letter.source_partition, letter.source_offset
            )
        return found if isinstance(found, Reading) else None

    # -- resume -------------------------------------------------------------------------
    async def resume_all(self) -> dict[str, Outcome]:
        """Finish every interrupted reprocess without writing a reading twice."""
        intents = [(k, d) for k, d in self.state.items() if d.state is D.REPROCESSING]
        if not intents:
            return {}
        present: dict[tuple[str, int], set[tuple]] = {}
        by_partition = collections.defaultdict(list)
        for _k, d in intents:
            by_partition[(d.clean_topic, d.clean_partition)].append(d.clean_from)
        for (topic, part), starts in by_partition.items():
            present[(topic, part)] = {
                identity(r) async for _rec, r in scan(self.oplog, topic, part, min(starts))
            }
        out: dict[str, Outcome] = {}
        for key, d in intents:
            letter = await read_at(self.oplog, d.dlq_topic, d.dlq_partition, d.dlq_offset)
            if letter is None:
                continue  # the DLQ lost the letter: nothing to compare or write
            original = await self.original(letter)
            if (
                original is None
                or identity(original) not in present[(d.clean_topic, d.clean_partition)]
            ):
                reading, reason = await self.check(letter)
                if reading is None:  # the rules changed since: it stays in the DLQ
                    await self._record([(key, D.PENDING, {"reason": reason})])
                    out[key] = Outcome(id=key, result="refused", reason=reason)
                    continue
                await self.oplog.append(d.clean_topic, reading.asset_id, reading)
            done = {"clean_topic": d.clean_topic, "source": d.source}
            await self._record([(key, D.REPROCESSED, done)])
            out[key] = Outcome(id=key, result="resumed", clean_topic=d.clean_topic)
        return out
