"""The validator actor: ``*.raw`` → ``*.clean`` | ``dlq.*`` plus gap/clock-skew events.

Delivery: at-least-once. Each fetched batch is validated in memory, its
outputs are appended (clean, then dead letters, then events), and only then
the input offsets are committed (at most every ``commit_interval_s``, and when
caught up or stopping: ``stage_commit``). A crash in between replays them after
the restart: clean readings may appear twice in ``*.clean`` (the sinks'
upsert on (asset_id, parameter, device_time) makes that harmless), nothing is
lost. A failed append raises: the supervisor restarts the actor with a fresh
rule state (see ``rules.py`` for what that state is).

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
        every ``commit_interval_s``; see ``stage_commit``)."""
        t0 = time.perf_counter()
        out: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
        commit: dict[tuple[str, int], int] = {}
        encode = self.codec.encode
        check = self.rules.check
        passthrough = getattr(self.codec, "passthrough", None)
        remember = getattr(self.codec, "remember", None)
        events_topic = self.config.events_topic
        names = self._names
        decode = self.codec.decode
        tp: tuple[str, int] | None = None
        for rec in records:
            src = rec.topic
            n = names.get(src)
            if n is None:
                base = src[:-4] if src.endswith(".raw") else src
                n = names[src] = (f"{base}.clean", f"dlq.{base}")
            if tp is None or rec.partition != tp[1] or src != tp[0]:
                tp = (src, rec.partition)  # one tuple per run of a partition
            commit[tp] = rec.offset + 1
            try:
                try:
                    reading = decode(src, rec.value)
                except SchemaUnavailable:  # an id not loaded yet: ask the store once
                    reading = await self.codec.decode_async(src, rec.value)
            except (*DECODE_ERRORS, SchemaUnavailable) as exc:
                reason = "unknown_schema" if isinstance(exc, SchemaUnavailable) else "undecodable"
                self.undecodable += 1
                log.warning(
                    "validator_undecodable topic=%s partition=%d offset=%d reason=%s error=%s",
                    src, rec.partition, rec.offset, reason, type(exc).__name__,
                )
                out[n[1]].append((rec.key, encode(n[1], self._dead(rec, None, reason, exc))))
                continue
            verdict = check(reading)
            key = rec.key if rec.key is not None else reading.asset_id.encode()
            if verdict.reading is not None:
                topic = n[0]
                value = None
                if verdict.reading is reading and passthrough is not None:
                    value = passthrough(src, topic, rec.value)  # unchanged: no re-encode
                    if value is not None and remember is not None:
                        remember(value, reading, topic)  # the aggregator here need not decode it
                out[topic].append((key, value or encode(topic, verdict.reading)))
            elif verdict.reject is not None:
                out[n[1]].append((key, encode(n[1], self._dead(rec, reading, verdict.reject))))
            if verdict.events:
                for ev in verdict.events:
                    out[events_topic].append((ev.asset_id.encode(), encode(events_topic, ev)))
        # clean first, so a reader never sees an event before its reading's batch
        for topic in sorted(out, key=lambda t: (t == events_topic, t.startswith("dlq."))):
            await self.log.append(topic, out[topic])
            self.written[topic] += len(out[topic])
        self.commits.add(commit)
        await self.commits.maybe()
        self.consumed += len(records)
        self.batches += 1
        self.busy_s += time.perf_counter() - t0

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
        }
        for topic, n in self.written.items():
            m[f"written_{topic.replace('.', '_')}_total"] = float(n)
        for name, n in self.rules.counts.items():
            m[f"rule_{name}_total"] = float(n)
        return m
