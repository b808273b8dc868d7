"""The validator actor: ``*.raw`` → ``*.clean`` | ``dlq.*`` plus gap/clock-skew events.

Delivery: at-least-once. Each fetched batch is validated in memory, its
outputs are appended (clean, then dead letters, then events), and only then
the input offsets are committed (at most every ``commit_interval_s``, and when
caught up or stopping: ``stage_commit``). A crash in between replays them after
the restart: clean readings may appear twice in ``*.clean`` (the sinks'
upsert on (asset_id, parameter, device_time) makes that harmless), nothing is
lost. A failed append raises: the supervisor restarts the actor with a fresh
rule state (see ``rules.py`` for what that state is).

The outputs are appended unsynced (``append(sync=False)``: no fsync of their
own, ~2 per second instead of one per batch); the input commit is a synced
transaction written after them, so input is never committed before the
outputs made from it are durable. A kill -9 loses no committed transaction (it
is the replay above). A power cut may lose the unsynced outputs appended since
the last fsync of the log (this stage's commit, or any other process's synced
write); their input was not committed (that commit would have synced them),
so the restart writes them again: lost outputs are written again, none is
lost; outputs a later fsync kept before the cut repeat, as after a kill -9.
What downstream did with a lost output: a stage's or sink's own synced commit
past it would have kept it, so their replay reads the rewritten one (the sinks
upsert, the alarm evaluator's watermarks drop what it journalled already); a
checkpoint file that counts it is written after ``log.sync()`` (the alarm
evaluator's and the aggregator's), so it never counts a lost output.

Records that cannot be decoded go to ``dlq.<x>`` with reason
``undecodable`` (not Avro in the wire format) or ``unknown_schema`` (a schema
id the store does not have, or cannot fetch right now: reprocess it from the
DLQ later) and a placeholder reading (BAD, value None) that points at the
source offset; the raw topic keeps the original bytes. A poison record never
stops the stage.

``codec`` is duck-typed: ``encode(topic, record) -> bytes`` and
``decode(topic, value) -> Struct`` (the log's Avro codec in production).
"""

from __future__ import annotations

import logging
import struct
import time
from collections import defaultdict
from typing import Any

import msgspec

from otgate.actors.actor import Actor
from otgate.actors.log.base import LogBackend, LogRecord
from otgate.actors.log.schemas import SchemaUnavailable
from otgate.actors.records import DeadLetter, Quality, Reading, now_ns
from otgate.actors.stage_codec import prepare
from otgate.actors.stage_commit import OffsetCommits
from otgate.actors.validator.config import ValidatorConfig
from otgate.actors.validator.rules import RuleSet

log = logging.getLogger("otgate.validator")

DECODE_ERRORS = (
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    UnicodeDecodeError,
    msgspec.DecodeError,
    msgspec.ValidationError,
)
"""What a malformed record raises while decoding (data errors, never retried)."""


class ValidatorActor(Actor):
    """Validates the raw topics with its own consumer group (see module doc)."""

    kind = "validator"

    def __init__(
        self,
        actor_id: str,
        config: ValidatorConfig,
        log_backend: LogBackend,
        codec: Any,
        *,
        fetch_timeout_s: float = 0.5,
    ) -> None:
        super().__init__(actor_id)
        self.config = config
        self.log = log_backend
        self.codec = codec
        self.fetch_timeout_s = fetch_timeout_s
        self.rules = RuleSet(config)
        self._names: dict[str, tuple[str, str]] = {}  # input topic -> (clean, dlq)
        self.consumer: Any = None
        self.commits: OffsetCommits | None = None
        self.consumed = 0
        self.written: dict[str, int] = defaultdict(int)
        self.undecodable = 0
        self.batches = 0
        self.busy_s = 0.0
        self.cpu_s = 0.0
        self.append_s = 0.0

    async def setup(self) -> None:
        self.consumer = self.log.consumer(self.config.group, self.config.inputs)
        self.commits = OffsetCommits(self.consumer, self.config.commit_interval_s)

    async def teardown(self) -> None:
        if self.commits is not None:
            await self.commits.close()
        if self.consumer is not None:
            await self.consumer.close()

    def output_topics(self) -> list[str]:
        out = [self.config.events_topic]
        for t in self.config.inputs:
            base = t[:-4]
            out += [f"{base}.clean", f"dlq.{base}"]
        return out

    async def main(self) -> None:
        await prepare(self.codec, [*self.config.inputs, *self.output_topics()])
        while True:
            records = await self.consumer.fetch(self.config.batch_size, self.fetch_timeout_s)
            if records:
                await self.process(records)
            else:  # caught up: commit what the interval held back
                await self.commits.flush()

    async def process(self, records: list[LogRecord]) -> None:
        """Validate one batch, append its outputs, then commit its offsets (at most
        every ``commit_interval_s``; see ``stage_commit``).

        Per run of records from one partition: the run's outputs, the compiled
        decoder of its schema and the header pair that passes an unchanged
        reading on without encoding it again are looked up once."""
        t0, c0 = time.perf_counter(), time.thread_time()
        out: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
        memo: dict[str, tuple[list[bytes], list[Reading]]] = {}
        events: list[Reading] = []
        commit: dict[tuple[str, int], int] = {}
        codec = self.codec
        encode, decode, validate = codec.encode, codec.decode, self.rules.validate
        passthrough = getattr(codec, "passthrough", None)
        decoder_for = getattr(codec, "decoder_for", None)
        tp: tuple[str, int] | None = None
        src, clean, dlq = "", "", ""
        clean_out: list[tuple[bytes | None, bytes]] = []
        memo_v: list[bytes] = []
        memo_r: list[Reading] = []
        src_head = dst_head = fast_head = b""
        fast = None
        last = 0
        for rec in records:
            if tp is None or rec.partition != tp[1] or rec.topic != src:
                if tp is not None:
                    commit[tp] = last + 1
                src = rec.topic
                tp = (src, rec.partition)  # one tuple per run of a partition
                clean, dlq = self._outputs(src)
                clean_out = out[clean]
                memo_v, memo_r = memo.setdefault(clean, ([], []))
                pair = passthrough(src, clean) if passthrough is not None else None
                src_head, dst_head = pair or (b"", b"")
                fast, fast_head = None, b""
            last = rec.offset
            value = rec.value
            head = value[:5]
            try:
                if fast is not None and head == fast_head:
                    reading = fast(value, 5)
                else:
                    try:
                        reading = decode(src, value)
                    except SchemaUnavailable:  # an id not loaded yet: ask the store once
                        reading = await codec.decode_async(src, value)
                    if decoder_for is not None:
                        fast, fast_head = decoder_for(src, value), head
            except (*DECODE_ERRORS, struct.error, SchemaUnavailable) as exc:
                reason = "unknown_schema" if isinstance(exc, SchemaUnavailable) else "undecodable"
                self.undecodable += 1
                log.warning(
                    "validator_undecodable topic=%s partition=%d offset=%d reason=%s error=%s",
                    src, rec.partition, rec.offset, reason, type(exc).__name__,
                )
                out[dlq].append((rec.key, encode(dlq, self._dead(rec, None, reason, exc))))
                continue
            verdict = validate(reading, events)
            if verdict is None:  # a dropped duplicate
                continue
            key = rec.key if rec.key is not None else reading.asset_id.encode()
            if verdict is reading and head == src_head:
                value = dst_head + value[5:]  # unchanged: no re-encode
                memo_v.append(value)  # and the aggregator here need not decode it
                memo_r.append(reading)
                clean_out.append((key, value))
            elif isinstance(verdict, str):
                out[dlq].append((key, encode(dlq, self._dead(rec, reading, verdict))))
            else:
                clean_out.append((key, encode(clean, verdict)))
        if tp is not None:
            commit[tp] = last + 1
        if events:
            topic = self.config.events_topic
            out[topic] += [(ev.asset_id.encode(), encode(topic, ev)) for ev in events]
        remember = getattr(codec, "remember", None)
        if remember is not None:
            for topic, (values, objs) in memo.items():
                if values:
                    remember(topic, values, objs)
        self.cpu_s += time.thread_time() - c0
        # clean first, so a reader never sees an event before its reading's batch
        events_topic = self.config.events_topic
        a0 = time.perf_counter()
        for topic in sorted(out, key=lambda t: (t == events_topic, t.startswith("dlq."))):
            if out[topic]:
                await self.log.append(topic, out[topic], sync=False)
                self.written[topic] += len(out[topic])
        self.append_s += time.perf_counter() - a0
        self.commits.add(commit)
        await self.commits.maybe()
        self.consumed += len(records)
        self.batches += 1
        self.busy_s += time.perf_counter() - t0

    def _outputs(self, src: str) -> tuple[str, str]:
        """(clean topic, dead-letter topic) of an input topic."""
        n = self._names.get(src)
        if n is None:
            base = src[:-4] if src.endswith(".raw") else src
            n = self._names[src] = (f"{base}.clean", f"dlq.{base}")
        return n

    def _dead(
        self,
        rec: LogRecord,
        reading: Reading | None,
        reason: str,
        exc: BaseException | None = None,
    ) -> DeadLetter:
        if reading is None:
            reading = Reading(
                asset_id="", parameter="", value=None, quality=Quality.BAD,
                gateway_time=rec.timestamp_ns,
            )
        return DeadLetter(
            reading=reading,
            reason=reason,
            stage="validator",
            error=f"{type(exc).__name__}: {exc}"[:500] if exc is not None else "",
            source_topic=rec.topic,
            source_partition=rec.partition,
            source_offset=rec.offset,
            gateway_time=now_ns(),
        )

    def metrics(self) -> dict[str, float]:
        m = {
            "consumed_total": float(self.consumed),
            "undecodable_total": float(self.undecodable),
            "batches_total": float(self.batches),
            "commits_total": float(self.commits.commits if self.commits else 0),
            "busy_seconds_total": self.busy_s,
            "cpu_seconds_total": self.cpu_s,
            "append_seconds_total": self.append_s,
        }
        for topic, n in self.written.items():
            m[f"written_{topic.replace('.', '_')}_total"] = float(n)
        for name, n in self.rules.counts.items():
            m[f"rule_{name}_total"] = float(n)
        return m
