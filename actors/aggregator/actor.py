"""The aggregator actor: ``telemetry.clean`` → ``telemetry.1s`` / ``1min`` / ``1h``.

Restart scheme (no window emitted twice, none lost or partial):

1. *Emitted windows* are remembered as a high-water mark per (asset,
   parameter, resolution): the start of the last window emitted (windows of
   one stream close in start order). A rebuilt or restored window at or below
   it is skipped, never emitted twice. The output topics are the truth for
   the marks: a second consumer group ``<group>.emitted`` reads our own
   outputs. At a checkpoint the actor reads that group to the end
   (everything it appended so far is already in the in-memory marks), saves
   the checkpoint file, then commits the ``.emitted`` offsets. At start it
   loads the file and folds in every aggregate written after the committed
   ``.emitted`` offsets (those appended after the last checkpoint) before it
   consumes any input. A crash at any point leaves the file at or behind
   what is on the log, and the fold closes the gap.
2. *Short windows* (shorter than ``persist_from``, e.g. 1 s) are rebuilt by
   replay: the input commit never passes the first record of an open short
   window, so after a crash the log replays every record of each.
3. *Persisted windows* (``persist_from`` and longer: 1 min, 1 h) are saved
   with their statistics in the checkpoint, each with the last offset it
   included per partition (``through``), together with the input positions
   at that moment. Between checkpoints the input commit is also held back to
   those positions. After a crash the windows are restored, replayed records
   at or below ``through`` are skipped for them, later ones are added, so
   each record counts once. A restart therefore replays about one checkpoint
   interval plus one short window of input, not up to an hour. With
   ``persist_from = None`` every window is rebuilt as in 2.

File: ``<state_dir>/<actor id>.ckpt`` (msgpack, fsync + rename; see
``checkpoint.py``). Its size grows with the open persisted windows (each
keeps up to ``max_samples`` values for the percentiles).

Order per loop: fetch → add to windows → take closed windows → append them →
commit input offsets (held back as in 2 and 3) → checkpoint when due. A
failed append raises; the supervisor restarts the actor, which recovers as
above. Late readings (their window already closed) are counted, not
aggregated; they stay in ``telemetry.clean``.

``codec`` is duck-typed: ``encode(topic, record)`` / ``decode(topic, value)``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import anyio

from otgate.actors import heap
from otgate.actors.actor import Actor
from otgate.actors.aggregator import checkpoint
from otgate.actors.aggregator.config import AggregatorConfig
from otgate.actors.aggregator.windows import RESOLUTIONS_NS, Window, Windows
from otgate.actors.log.base import LogBackend, LogRecord
from otgate.actors.log.schemas import SchemaUnavailable
from otgate.actors.records import Aggregate, DeadLetter, Quality, Reading, now_ns
from otgate.actors.stage_codec import decode, prepare
from otgate.actors.stage_turns import EVERY, Turns
from otgate.actors.validator.actor import DECODE_ERRORS

log = logging.getLogger("otgate.aggregator")
EMIT_PART = 250
"""Closed windows turned into aggregates and appended at a time."""


def persisted_resolutions(config: AggregatorConfig) -> frozenset[str]:
    """The configured resolutions at least as long as ``persist_from``."""
    if config.persist_from is None:
        return frozenset()
    floor = RESOLUTIONS_NS[config.persist_from]
    return frozenset(r for r in config.resolutions if RESOLUTIONS_NS[r] >= floor)



def to_aggregate(w: Window, gateway_time: int) -> Aggregate:
    """The Aggregate record of a closed window.

    ``n`` numeric values feed min/max/mean/stddev/percentiles, ``count`` is
    every reading (BAD and non-numeric too).
    """
    st = w.stats
    n, mean, m2, lo, hi, total = st.numbers()
    has = n > 0
    p50, p95, p99 = st.percentiles()
    q = st.quality_counts
    return Aggregate(
        asset_id=w.asset_id,
        parameter=w.parameter,
        window=w.resolution,
        window_start=w.start,
        window_end=w.end,
        count=st.count,
        min=lo if has else None,
        max=hi if has else None,
        mean=mean if has else None,
        sum=total if has else None,
        first=st.first,
        last=st.last,
        unit=w.unit,
        quality=st.worst_quality,
        gateway_time=gateway_time,
        stddev=math.sqrt(m2 / n) if has else None,
        p50=p50,
        p95=p95,
        p99=p99,
        numeric_count=n,
        count_good=q[0],
        count_suspect=q[1],
        count_uncertain=q[2],
        count_bad=q[3],
    )


class AggregatorActor(Actor):
    """Windows over the clean telemetry (see module doc for the restart scheme)."""

    kind = "aggregator"

    def __init__(
        self,
        actor_id: str,
        config: AggregatorConfig,
        log_backend: LogBackend,
        codec: Any,
        state_dir: Path,
        *,
        fetch_timeout_s: float = 0.25,
        clock: Any = time.monotonic,
        wall_ns: Any = time.time_ns,
    ) -> None:
        super().__init__(actor_id)
        self.config = config
        self.log = log_backend
        self.codec = codec
        self.ckpt_path = Path(state_dir) / f"{actor_id}.ckpt"
        self.fetch_timeout_s = fetch_timeout_s
        self._clock = clock
        self.windows = Windows(
            list(config.resolutions),
            lateness_ns=int(config.watermark_lateness_s * 1e9),
            idle_timeout_s=config.idle_timeout_s,
            max_samples=config.max_samples,
            persisted=persisted_resolutions(config),
            clock=clock,
            wall_ns=wall_ns,
        )
        self.outputs = {res: f"telemetry.{res}" for res in config.resolutions}
        self.consumer: Any = None
        self.emitted_consumer: Any = None
        self.position: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self.consumed = 0
        self.undecodable = 0
        self.recovered_marks = 0
        self.checkpoints = 0
        self.checkpoint_bytes = 0
        self.checkpoint_s = 0.0
        self.heap_trimmed = 0
        self.restored_windows = 0
        self._restored = checkpoint.Checkpoint()
        self.busy_s = 0.0
        self.batches = 0
        self.commits = 0
        self.turns = Turns()

    async def setup(self) -> None:
        self._restored = checkpoint.load(self.ckpt_path)
        self.windows.high_water = self._restored.high_water()
        self.consumer = self.log.consumer(self.config.group, [self.config.input])
        self.emitted_consumer = self.log.consumer(
            f"{self.config.group}.emitted", list(self.outputs.values())
        )

    async def teardown(self) -> None:
        for c in (self.consumer, self.emitted_consumer):
            if c is not None:
                await c.close()

    async def main(self) -> None:
        await prepare(self.codec, [*self.outputs.values(), "dlq.telemetry"])
        await self.recover()
        interval = self.config.checkpoint_interval_s
        next_idle = self._clock() + 0.5
        next_checkpoint = self._clock() + interval
        while True:
            records = await self.consumer.fetch(self.config.batch_size, self.fetch_timeout_s)
            await self.process(records)
            now = self._clock()
            if now >= next_idle:
                self.windows.close_idle()
                await self.emit_and_commit()
                next_idle = now + 0.5
            if now >= next_checkpoint:
                await self.checkpoint()
                await self.emit_and_commit()  # the commit may move up to the checkpoint
                next_checkpoint = now + interval

    async def recover(self) -> None:
        """Fold aggregates written after the last checkpoint into the marks, then
        restore the persisted windows not emitted since."""
        hw = self.windows.high_water
        positions: dict[tuple[str, int], int] = {}
        while records := await self.emitted_consumer.fetch(10_000, 0.05):
            for rec in records:
                positions[(rec.topic, rec.partition)] = rec.offset + 1
                agg = await decode(self.codec, rec.topic, rec.value)
                key = (agg.asset_id, agg.parameter, agg.window)
                if agg.window_start > hw.get(key, -(1 << 62)):
                    hw[key] = agg.window_start
                    self.recovered_marks += 1
        restored = self._restored
        self.restored_windows = self.windows.import_state(restored.windows)
        if restored.positions:
            self.windows.checkpointed = restored.position_map()
        await anyio.to_thread.run_sync(
            checkpoint.save, self.ckpt_path, hw, restored.windows, self.windows.checkpointed
        )
        if positions:
            await self.emitted_consumer.commit(positions)
        self._restored = checkpoint.Checkpoint()  # the decoded file (~2x its size): now in windows
        # its freed pages, now rather than at the first checkpoint (a 46 MB checkpoint of the
        # soak's 2,000 streams: 43 MiB resident for those 30 s; the trim takes ~7 ms of CPU)
        self.heap_trimmed += await anyio.to_thread.run_sync(heap.trim)
        log.info(
            "aggregator_recovered aggregator_id=%s marks=%d folded=%d windows_restored=%d",
            self.id, len(hw), self.recovered_marks, self.restored_windows,
        )

    async def process(self, records: list[LogRecord]) -> None:
        """Add a batch to the windows, emit what closed, commit what is safe."""
        t0 = time.perf_counter()
        add = self.windows.add
        decode_sync = self.codec.decode
        dead: list[tuple[bytes | None, bytes]] = []
        position = self.position
        turns = self.turns
        turns.start()
        tp: tuple[str, int] | None = None
        for n, rec in enumerate(records, 1):
            if not n % EVERY and turns.due():  # the validator and evaluator go first
                await turns.turn()
            if tp is None or rec.partition != tp[1] or rec.topic != tp[0]:
                tp = (rec.topic, rec.partition)  # one tuple per run of a partition
            position[tp] = rec.offset + 1
            try:
                try:
                    reading = decode_sync(rec.topic, rec.value)
                except SchemaUnavailable:
                    reading = await self.codec.decode_async(rec.topic, rec.value)
            except DECODE_ERRORS as exc:
                self.undecodable += 1
                dead.append((rec.key, self.codec.encode("dlq.telemetry", _dead(rec, exc))))
                continue
            add(reading, tp, rec.offset)
        if dead:
            await self.log.append("dlq.telemetry", dead)
        self.consumed += len(records)
        self.batches += 1 if records else 0
        await self.emit_and_commit()
        self.busy_s += time.perf_counter() - t0

    async def emit_and_commit(self) -> None:
        closed = self.windows.closed()
        gw = now_ns()
        # In parts: at an hour boundary every stream's 1 h window closes at once (2,000
        # windows of 2,048 values: 0.35 s of CPU for their percentiles alone), and the
        # bulkhead's loop runs between the parts (each append awaits the log) and every
        # few ms within one (``stage_turns``).
        turns = self.turns
        turns.start()
        for i in range(0, len(closed), EMIT_PART):
            by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
            for n, w in enumerate(closed[i : i + EMIT_PART], 1):
                if not n % 16 and turns.due():  # 1 min windows: ~50 us each
                    await turns.turn()
                topic = self.outputs[w.resolution]
                by_topic.setdefault(topic, []).append(
                    (w.asset_id.encode(), self.codec.encode(topic, to_aggregate(w, gw)))
                )
            for topic, recs in by_topic.items():
                await self.log.append(topic, recs)
        offsets = self.windows.commit_offsets(self.position)
        changed = {tp: o for tp, o in offsets.items() if self._committed.get(tp) != o}
        if changed:
            await self.consumer.commit(changed)
            self._committed.update(changed)
            self.commits += 1

    async def checkpoint(self) -> None:
        """Save marks, persisted windows and positions; then mark our outputs up to
        here as covered by the file, and let the input commit move up to here."""
        positions: dict[tuple[str, int], int] = {}
        while records := await self.emitted_consumer.fetch(10_000, 0):
            for rec in records:
                positions[(rec.topic, rec.partition)] = rec.offset + 1
        here = dict(self.position)
        t0 = time.perf_counter()
        await self.log.sync()  # the file may count no input a power cut could take back
        self.checkpoint_bytes = await anyio.to_thread.run_sync(self._save, here)
        self.checkpoint_s = time.perf_counter() - t0
        log.info(
            "aggregator_checkpoint aggregator_id=%s bytes=%d seconds=%.3f heap_trimmed_mib=%.1f",
            self.id, self.checkpoint_bytes, self.checkpoint_s, self.heap_trimmed / 2**20,
        )
        if positions:
            await self.emitted_consumer.commit(positions)
        if self.windows.persisted:
            self.windows.checkpointed = here
        self.checkpoints += 1

    def _save(self, here: dict[tuple[str, int], int]) -> int:
        """In a worker thread, straight from the windows: this actor's task is the only
        one that changes them (or the marks), and it waits for this to return."""
        size = checkpoint.save_windows(
            self.ckpt_path, self.windows.high_water, self.windows.persisted_windows(), here
        )
        self.heap_trimmed += heap.trim()
        return size

    def metrics(self) -> dict[str, float]:
        w = self.windows
        m = {
            "consumed_total": float(self.consumed),
            "undecodable_total": float(self.undecodable),
            "open_windows": float(w.open_count),
            "windows_emitted_total": float(w.emitted),
            "windows_deduplicated_total": float(w.deduplicated),
            "replayed_into_emitted_total": float(w.already_emitted),
            "checkpoints_total": float(self.checkpoints),
            "checkpoint_bytes": float(self.checkpoint_bytes),
            "checkpoint_seconds": round(self.checkpoint_s, 3),
            "heap_trimmed_bytes_total": float(self.heap_trimmed),
            "restored_windows": float(self.restored_windows),
            "replayed_into_restored_total": float(w.replayed_into_restored),
            "busy_seconds_total": self.busy_s,
            "batches_total": float(self.batches),
            "commits_total": float(self.commits),
            "turns_total": float(self.turns.turns),
        }
        for res, n in w.late.items():
            m[f"late_{res}_total"] = float(n)
        return m


def _dead(rec: LogRecord, exc: BaseException) -> DeadLetter:
    return DeadLetter(
        reading=Reading(asset_id="", parameter="", value=None, quality=Quality.BAD,
                        gateway_time=rec.timestamp_ns),
        reason="undecodable",
        stage="aggregator",
        error=f"{type(exc).__name__}: {exc}"[:500],
        source_topic=rec.topic,
        source_partition=rec.partition,
        source_offset=rec.offset,
        gateway_time=now_ns(),
    )
