"""The alarm evaluator actor: readings and operator commands in, the alarm journal out.

Reads ``telemetry.clean``, ``events.clean``, ``alarms.raw`` and
``alarms.commands`` with one consumer group; writes every transition to
``alarms.clean`` (keyed by asset) and flood events to ``logs.gateway``.

Delivery: per batch, evaluate, append the transitions, then commit the input
offsets (at-least-once, like the validator), at most every
``commit_interval_s`` (``stage_commit``) and whenever the evaluator is caught up.
Timers run every ``tick_s`` after a batch; when the definitions have timers
(stale, bad quality, delays), everything read before is committed with the
tick's transitions, so a replay cannot end a stale alarm raised after it.

Restart (a crash, a kill -9): before reading any input, ``recover`` rebuilds
the table: the checkpoint (``checkpoint.py``, saved every
``checkpoint_interval_s``), then the journal (``alarms.clean``) written since
it, read with the group ``<group>.journal`` (or the whole journal when there
is no checkpoint). The table holds each alarm's last state,
acknowledgements, shelving, the applied request ids, and each alarm's
watermark (the device time of its last raise or clear). The replayed batch
after the last input commit then raises nothing twice (readings not newer
than the watermark change nothing) and applies no command twice; nothing is
lost since nothing was committed before it was journalled.
"""

from __future__ import annotations

import logging
import struct
import time
from pathlib import Path
from typing import Any

import anyio

from otgate.actors.actor import Actor
from otgate.actors.alarms import checkpoint
from otgate.actors.alarms.config import AlarmsConfig, Unmatched
from otgate.actors.alarms.evaluator import Evaluator
from otgate.actors.alarms.health import AlarmHealth
from otgate.actors.log.base import LogBackend, LogRecord
from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.schemas import SchemaUnavailable
from otgate.actors.records import Alarm, GatewayEvent, now_ns
from otgate.actors.stage_codec import decode, prepare
from otgate.actors.stage_commit import OffsetCommits
from otgate.actors.validator.actor import DECODE_ERRORS

log = logging.getLogger("otgate.alarms")

JOURNAL = "alarms.clean"
COMMANDS = "alarms.commands"
EVENTS = "logs.gateway"
JOURNAL_JOIN_S = 8.0
"""On a broker, how long the first journal read at start waits for records."""
QUIET_MEMORY = 200_000
"""Unwatched streams remembered per topic by their first bytes (then it starts over)."""
_ROW = ("(f_asset_id, f_parameter, f_value, f_quality == 'BAD', "
        "f_gateway_time if f_device_time is None else f_device_time, f_unit)")


class AlarmEvaluator(Actor):
    """Evaluates alarm definitions on the clean stream (see module doc)."""

    kind = "alarms"

    def __init__(self, actor_id: str, config: AlarmsConfig, log_backend: LogBackend, codec: Any,
                 state_dir: Path | None = None, *, fetch_timeout_s: float = 0.1,
                 wall_ns: Any = now_ns, clock: Any = time.monotonic) -> None:
        super().__init__(actor_id)
        self.config = config
        self.log = log_backend
        self.codec = codec
        self.fetch_timeout_s = min(fetch_timeout_s, config.tick_s)
        self._wall = wall_ns
        self._clock = clock
        self.evaluator = Evaluator(config)
        self.health = AlarmHealth(config.health, source=actor_id)
        self.ckpt_path = Path(state_dir) / f"{actor_id}.ckpt" if state_dir else None
        self.consumer: Any = None
        self.commits: OffsetCommits | None = None
        self.journal: Any = None
        self._journal_pos: dict[tuple[str, int], int] = {}
        self._dirty = False
        self.checkpoints = 0
        self.checkpoint_bytes = 0
        self.consumed = 0
        self.commands = 0
        self.undecodable = 0
        self.transitions = 0
        self.recovered = 0
        self.busy_s = 0.0
        self.cpu_s = 0.0
        self.append_s = 0.0
        self.batches = 0
        self._raw = frozenset(t for t in config.inputs if t.startswith("alarms."))
        self._quiet: dict[str, set[bytes]] = {}  # topic -> first bytes of unwatched streams
        # The disk's block tier (95 %) holds the readings back, not the alarms: a stale
        # alarm is what a plant needs to see then (alarm topics are never evicted).
        self._urgent = {"bypass_block": True} if isinstance(log_backend, EmbeddedLog) else {}

    async def setup(self) -> None:
        self.consumer = self.log.consumer(self.config.group, [*self.inputs(), COMMANDS])
        self.commits = OffsetCommits(self.consumer, self.config.commit_interval_s, self._clock)
        self.journal = self.log.consumer(f"{self.config.group}.journal", [JOURNAL])

    def inputs(self) -> list[str]:
        """The input topics worth reading: without definitions, only ``alarms.raw``
        can raise an alarm (``unmatched_raw``), so the clean topics are not read."""
        cfg = self.config
        if cfg.definitions:
            return list(cfg.inputs)
        if cfg.unmatched_raw is Unmatched.IGNORE:
            return []
        return [t for t in cfg.inputs if t in self._raw]

    async def teardown(self) -> None:
        if self.commits is not None:
            await self.commits.close()
        for c in (self.consumer, self.journal):
            if c is not None:
                await c.close()

    async def main(self) -> None:
        await prepare(self.codec, [*self.config.inputs, COMMANDS, JOURNAL, EVENTS])
        await self.recover()
        tick, every = self.config.tick_s, self.config.checkpoint_interval_s
        next_tick = self._clock() + tick
        next_checkpoint = self._clock() + every
        while True:
            records = await self.consumer.fetch(self.config.batch_size, self.fetch_timeout_s)
            due = self._clock() >= next_tick
            if records or due:
                await self.step(records, due)
            if not records:  # caught up: commit what the interval held back
                await self.commits.flush()
            if due:
                next_tick = self._clock() + tick
            if self._clock() >= next_checkpoint:
                await self.checkpoint()
                next_checkpoint = self._clock() + every

    async def recover(self) -> None:
        """Rebuild the table (checkpoint, then the journal since) before any input."""
        saved = checkpoint.load(self.ckpt_path) if self.ckpt_path else None
        # without a checkpoint, read the whole journal: a group that never commits
        reader = self.journal if saved else self.log.consumer(
            f"{self.config.group}.rebuild", [JOURNAL])
        folded: list[Alarm] = []
        # An embedded fetch reads a snapshot: empty means the end. A broker's group
        # consumer may answer empty until its partitions are assigned (a rebalance
        # takes seconds): an incomplete fold would raise alarms twice, so wait there.
        embedded = isinstance(self.log, EmbeddedLog)
        wait = 0.05 if embedded else JOURNAL_JOIN_S
        try:
            while recs := await reader.fetch(10_000, wait):
                wait = 0.05 if embedded else 0.5
                for rec in recs:
                    if reader is self.journal:
                        self._journal_pos[(rec.topic, rec.partition)] = rec.offset + 1
                    try:
                        folded.append(await decode(self.codec, JOURNAL, rec.value))
                    except (*DECODE_ERRORS, SchemaUnavailable) as exc:
                        log.warning("alarms_journal_undecodable offset=%d error=%s",
                                    rec.offset, type(exc).__name__)
        finally:
            if reader is not self.journal:
                await reader.close()
        now = self._wall()
        if saved:
            for rid in saved.applied:
                self.evaluator.remember(rid)
            self.health.load(saved.raises, saved.raises_per_alarm)
        known = self.evaluator.restore(folded, now, saved.entries if saved else ())
        for rec in folded:  # the health windows see the raises of before the restart
            self.health.observe((rec,), rec.gateway_time)
        self.health.tick(now)
        self.evaluator.start(now)
        self.recovered = len(folded)
        log.info("alarms_recovered evaluator_id=%s checkpoint=%s transitions=%d alarms=%d "
                 "standing=%d", self.id, "yes" if saved else "no", len(folded), known,
                 sum(1 for e in self.evaluator.entries.values() if e.standing))

    async def checkpoint(self) -> None:
        """Save the table when it changed, then move ``<group>.journal`` past what it
        holds (every record we appended so far is in the table)."""
        if self.ckpt_path is None or not self._dirty:
            return
        while recs := await self.journal.fetch(10_000, 0):
            for rec in recs:
                self._journal_pos[(rec.topic, rec.partition)] = rec.offset + 1
        ev = self.evaluator
        body = checkpoint.AlarmCheckpoint(
            entries=[checkpoint.EntryState.of(e) for e in ev.entries.values() if e.seq > 0],
            applied=list(ev.applied), **self.health.export(),
        )
        self._dirty = False
        await self.log.sync()  # the file may hold no input a power cut could take back
        self.checkpoint_bytes = await anyio.to_thread.run_sync(
            checkpoint.save, self.ckpt_path, body)
        if self._journal_pos:
            await self.journal.commit(dict(self._journal_pos))
        self.checkpoints += 1

    async def step(self, records: list[LogRecord], timers: bool) -> None:
        """Evaluate one batch (and the timers), journal the transitions, then commit."""
        t0, c0 = time.perf_counter(), time.thread_time()
        now = self._wall()
        out: list[Alarm] = []
        commit: dict[tuple[str, int], int] = {}
        if records:
            self.batches += 1
            await self._evaluate(records, now, out, commit)
        events: list[GatewayEvent] = []
        if timers:
            self.evaluator.tick(now, out)
            events += self.health.tick(now)
        events += self.health.observe(out, now)
        enc = self.codec.encode
        journal = [(r.asset_id.encode(), enc(JOURNAL, r)) for r in out]
        self.cpu_s += time.thread_time() - c0
        if journal:
            a0 = time.perf_counter()
            await self.log.append(JOURNAL, journal, **self._urgent)
            self.append_s += time.perf_counter() - a0
            self.transitions += len(out)
            self._dirty = True
            for r in out:
                log.info("alarm_transition alarm_id=%s event=%s state=%s previous=%s by=%s seq=%d",
                         r.alarm_id, r.event, r.state.value, r.previous_state.value, r.by, r.seq)
        if events:
            await self.log.append(EVENTS, [(e.source.encode(), self.codec.encode(EVENTS, e))
                                           for e in events], **self._urgent)
            for e in events:
                log.warning("%s evaluator_id=%s %s", e.kind, self.id,
                            " ".join(f"{k}={v}" for k, v in e.fields.items()))
        self.commits.add(commit)
        if timers and self.evaluator.has_timers():
            await self.commits.flush()
        else:
            await self.commits.maybe()
        self.busy_s += time.perf_counter() - t0

    async def _evaluate(self, records: list[LogRecord], now: int, out: list[Alarm],
                        commit: dict[tuple[str, int], int]) -> None:
        ev = self.evaluator
        bindings, feed = ev.bindings, ev.reading
        row_decoder = getattr(self.codec, "row_decoder", None)
        raw_topics = self._raw
        quiet_by_topic = self._quiet
        tp: tuple[str, int] | None = None
        fast: Any = None
        fast_head = b""
        quiet: set[bytes] = set()
        last = 0
        for rec in records:
            topic = rec.topic
            if tp is None or rec.partition != tp[1] or topic != tp[0]:
                if tp is not None:
                    commit[tp] = last + 1
                tp = (topic, rec.partition)  # one tuple per run of a partition
                quiet = quiet_by_topic.setdefault(topic, set())
                fast, fast_head = None, b""
            last = rec.offset
            data = rec.value
            # Hot path: a stream no definition watches is known by its first bytes: the
            # schema header, then the asset and parameter as written. Only exact ones are
            # remembered (one-byte lengths, checked then), so the end guessed here from
            # one-byte lengths can match nothing but the same stream.
            try:
                end = 6 + (data[5] >> 1)
                prefix: bytes | None = data[:end + 1 + (data[end] >> 1)]
            except IndexError:
                prefix = None
            if prefix in quiet:
                continue
            head = data[:5]
            try:
                if topic == COMMANDS:
                    cmd = await decode(self.codec, topic, data)
                    self.commands += 1
                    self._dirty |= ev.command(cmd, now, out)
                    continue
                if head != fast_head:
                    fast, fast_head = row_decoder(topic, data, _ROW, {}) if row_decoder else None, head
                if fast is not None:
                    asset, parameter, value, bad, t, unit = fast(data, 5)
                else:
                    prefix = None  # another schema: its first bytes may mean something else
                    r = await decode(self.codec, topic, data)
                    asset, parameter, value, unit = r.asset_id, r.parameter, r.value, r.unit
                    bad = r.quality.value == "BAD"
                    t = r.gateway_time if r.device_time is None else r.device_time
            except (*DECODE_ERRORS, struct.error, SchemaUnavailable) as exc:
                # the validator dead-letters undecodable readings; alarms.raw keeps them
                self.undecodable += 1
                log.warning("alarms_undecodable topic=%s partition=%d offset=%d error=%s",
                            topic, rec.partition, rec.offset, type(exc).__name__)
                continue
            found = bindings(asset, parameter, topic in raw_topics, unit, now)
            if not found and prefix is not None and data[5] < 0x80 and data[end] < 0x80:
                if len(quiet) >= QUIET_MEMORY:
                    quiet.clear()
                quiet.add(prefix)
            for b in found:
                feed(b, value, bad, t, now, out)
        if tp is not None:
            commit[tp] = last + 1
        self.consumed += len(records)

    def metrics(self) -> dict[str, float]:
        ev = self.evaluator
        m = {
            "consumed_total": float(self.consumed),
            "commands_total": float(self.commands),
            "commands_duplicate_total": float(ev.duplicates),
            "commands_refused_total": float(ev.refused),
            "transitions_total": float(self.transitions),
            "journal_recovered": float(self.recovered),
            "checkpoints_total": float(self.checkpoints),
            "commits_total": float(self.commits.commits if self.commits else 0),
            "checkpoint_bytes": float(self.checkpoint_bytes),
            "undecodable_total": float(self.undecodable),
            "alarms_defined": float(len(ev.entries)),
            "readings_ignored_total": float(sum(b.condition.ignored
                                                for b in ev.bindings_by_id.values())),
            "busy_seconds_total": self.busy_s,
            "cpu_seconds_total": self.cpu_s,
            "append_seconds_total": self.append_s,
            "batches_total": float(self.batches),
        }
        m.update(self.health.metrics(ev.entries.values(), self._wall()))
        return m
