"""The delivery loop every log sink shares: own consumer group, commit after delivery.

Loop: fetch a batch with the sink's consumer group (``batch_size`` records at
most; with ``batch_wait_s`` the sink keeps fetching until the batch holds
``batch_size`` records or ``batch_bytes`` bytes of keys and values, or
``batch_wait_s`` passed since its first record) → ``tick()`` (timers a
sink keeps, e.g. the alert router's digests and escalations) → wait until
the sink may call its destination (``wait_allowed``: a circuit breaker's
cooldown) → ``deliver(batch)`` → on ``Delivered`` commit the offsets
``committable(batch)`` names (the whole batch by default) → on ``Errored``
keep the same batch and retry it after a capped exponential delay (none
while a breaker gates the next call: its cooldown is the delay). Records a
destination refuses for good are dead-lettered by the sink
(``dead_letter``) and then count as delivered. Any other exception fails
the actor; nothing was committed, so its supervisor's restart replays the
batch.

While a breaker is open nothing is fetched, so the log keeps the data and
``lag_records`` (log high watermarks minus the group's position plus the
batch in hand) grows. With ``prefetch`` the next batch is fetched while the
current one is delivered (I/O of the log and of the destination overlap; one
batch more in memory), together with the sink's ``prepare`` of it (decoding,
encoding: CPU work that needs no destination, so it runs while the destination
works on the batch before), and the commit of a delivered batch runs while the
next one is delivered (commits stay in order, one in flight at most;
``delivered`` counts a batch once its commit is done). ``records_per_second``
is the delivered rate over the last second.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from typing import Any

import anyio

from otgate.actors.actor import Actor
from otgate.actors.breaker import BreakerState, CircuitBreaker
from otgate.actors.log.base import LogBackend, LogRecord
from otgate.actors.log.schemas import SchemaUnavailable
from otgate.actors.messages import Snapshot, State
from otgate.actors.records import DeadLetter, Quality, Reading, now_ns
from otgate.actors.stage_codec import prepare
from otgate.actors.validator.actor import DECODE_ERRORS
from otgate.sinks.outcome import Outcome

log = logging.getLogger("otgate.sinks")


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 300 characters (logs, DLQ, /health)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]


class LogSink(Actor):
    """A sink fed from log topics by its own consumer group (see the module doc).

    Subclasses implement ``deliver``; a sink with one destination passes its
    ``breaker``; a sink with several overrides ``wait_allowed``, ``gated``,
    ``on_delivered`` and ``on_errored``. ``event`` prefixes the log events
    (``<event>_write_failed``, ``<event>_recovered``, ``<event>_rejected``).
    """

    kind = "sink"
    event = "sink"

    def __init__(
        self,
        actor_id: str,
        *,
        sink_id: str,
        group: str,
        topics: list[str],
        log_backend: LogBackend,
        codec: Any,
        batch_size: int,
        fetch_timeout_s: float,
        retry_initial_s: float,
        retry_max_s: float,
        dlq_topic: str,
        breaker: CircuitBreaker | None = None,
        batch_bytes: int = 0,
        batch_wait_s: float = 0.0,
        prefetch: bool = False,
        sleep: Callable[[float], Any] = anyio.sleep,
    ) -> None:
        super().__init__(actor_id)
        self.sink_id = sink_id
        self.group = group
        self.topics = topics
        self.log = log_backend
        self.codec = codec
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.batch_wait_s = batch_wait_s
        self.prefetch = prefetch
        self.ahead = 0  # records of the prefetched batch not yet taken
        self._prep: tuple[list[LogRecord], Any] | None = None  # (batch, prepare(batch))
        self._commits: Any = None  # with prefetch: the committer's inbox
        self._consumer_lock = anyio.Lock()  # a consumer is not safe for a concurrent call
        self.fetch_timeout_s = fetch_timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.dlq_topic = dlq_topic
        self.breaker = breaker
        self._sleep = sleep
        self.consumer: Any = None
        self.pending = 0
        self.delivered = 0
        self.batches = 0
        self.errored_batches = 0
        self.rejected = 0
        self.lag: float = float("nan")
        self.last_batch_s = 0.0
        self.busy_s = 0.0
        self.rate = 0.0

    # -- hooks ----------------------------------------------------------------
    async def deliver(self, batch: list[LogRecord]) -> tuple[Outcome, str]:
        """Send one batch; ``(DELIVERED, "")`` or ``(ERRORED, reason)``."""
        raise NotImplementedError

    def breakers(self) -> list[CircuitBreaker]:
        """The destination breakers (run as children, shown in the status tree)."""
        return [self.breaker] if self.breaker is not None else []

    async def wait_allowed(self) -> None:
        """Return once the destination may be called (an open breaker's cooldown)."""
        if self.breaker is not None:
            await self.breaker.wait_allowed()

    def gated(self) -> bool:
        """True when ``wait_allowed`` will wait out a cooldown (then no retry delay)."""
        return self.breaker is not None and self.breaker.breaker_state is not BreakerState.CLOSED

    def on_delivered(self) -> None:
        if self.breaker is not None:
            self.breaker.record_success()

    def on_errored(self, error: str) -> None:
        if self.breaker is not None:
            self.breaker.record_failure(error)

    async def tick(self) -> None:
        """Called once per loop turn, with or without a batch (timers)."""

    async def prepare(self, batch: list[LogRecord]) -> Any:
        """Work on ``batch`` that needs no destination (decode, encode); with
        ``prefetch`` it is done for the next batch while the current one is
        delivered, and ``deliver`` takes it with ``prepared(batch)``. Must not
        depend on the destination's state. Default: nothing (None)."""
        return None

    def prepared(self, batch: list[LogRecord]) -> Any:
        """``prepare(batch)``'s result when it was done ahead for this very batch, else None."""
        prep = self._prep
        return prep[1] if prep is not None and prep[0] is batch else None

    def committable(self, batch: list[LogRecord]) -> dict[tuple[str, int], int]:
        """Offsets to commit once ``batch`` is delivered: past its last record per partition."""
        offsets: dict[tuple[str, int], int] = {}
        for rec in batch:
            offsets[(rec.topic, rec.partition)] = rec.offset + 1
        return offsets

    def retry_after(self) -> float:
        """Seconds the destination asked to wait before the next try (HTTP
        ``Retry-After``); the retry waits at least this long, breaker or not."""
        return 0.0

    def output_topics(self) -> list[str]:
        return [self.dlq_topic]

    async def close_client(self) -> None:
        """Release the destination connection(s)."""

    async def caught_up(self) -> None:
        """Called once the backlog an outage left is delivered (after a recovery,
        the first batch smaller than ``batch_size``, or an empty fetch). Default: nothing."""

    # -- lifecycle ------------------------------------------------------------
    async def setup(self) -> None:
        self.consumer = self.log.consumer(self.group, self.topics)

    async def teardown(self) -> None:
        await self.close_client()
        if self.consumer is not None:
            await self.consumer.close()

    async def main(self) -> None:
        await prepare(self.codec, self.output_topics())
        async with anyio.create_task_group() as tg:
            for b in self.breakers():
                await tg.start(b.run)
            tg.start_soon(self._watch_lag)
            if not self.prefetch:
                await self._deliver_forever(self._fetch_now)
                return
            send, recv = anyio.create_memory_object_stream[tuple[list[LogRecord], Any]](0)
            self._commits, commits = anyio.create_memory_object_stream[
                tuple[dict[tuple[str, int], int], int]](0)
            tg.start_soon(self._fetch_ahead, send)
            tg.start_soon(self._commit_behind, commits)
            await self._deliver_forever(recv.receive)

    async def _fetch_now(self) -> tuple[list[LogRecord], Any]:
        return await self._fetch_batch(), None

    async def _fetch_ahead(self, send: Any) -> None:
        """With ``prefetch``: fetch and prepare the next batch while the current one
        is delivered (one batch ahead at most, also while a breaker is open)."""
        while True:
            batch = await self._fetch_batch()
            self.ahead = len(batch)
            await send.send((batch, await self.prepare(batch) if batch else None))

    async def _commit_behind(self, commits: Any) -> None:
        """With ``prefetch``: commit delivered batches, in order, while the loop
        delivers the next one; an error fails the actor (nothing later is committed)."""
        async for offsets, count in commits:
            await self.commit(offsets)
            self._count_delivered(count)

    def _count_delivered(self, count: int) -> None:
        self.delivered += count
        self.batches += 1

    async def _deliver_forever(self, next_batch: Callable[[], Any]) -> None:
        batch: list[LogRecord] | None = None
        failures = 0
        catching_up = False
        while True:
            if batch is None:
                self._prep = await next_batch()
                batch = self._prep[0]
                self.ahead = 0
                await self.tick()
                if not batch:
                    batch = None
                    if catching_up:  # the backlog ended on a full batch
                        catching_up = False
                        await self.caught_up()
                    continue
                self.pending = len(batch)
            await self.wait_allowed()
            t0 = time.perf_counter()
            outcome, error = await self.deliver(batch)
            self.last_batch_s = time.perf_counter() - t0
            self.busy_s += self.last_batch_s
            if outcome is Outcome.DELIVERED:
                if self._commits is not None:
                    await self._commits.send((self.committable(batch), len(batch)))
                else:
                    await self.commit(self.committable(batch))
                    self._count_delivered(len(batch))
                self.state = State.RUNNING
                self.on_delivered()
                if failures:
                    log.warning("%s_recovered sink_id=%s after_failures=%d",
                                self.event, self.sink_id, failures)
                    catching_up = True
                failures = 0
                if catching_up and len(batch) < self.batch_size:
                    catching_up = False
                    await self.caught_up()
                batch = self._prep = None
                self.pending = 0
                continue
            failures += 1
            self.errored_batches += 1
            self.state = State.DEGRADED
            self.last_error = error
            self.on_errored(error)
            log.warning(
                "%s_write_failed sink_id=%s records=%d attempt=%d gated=%s error=%s",
                self.event, self.sink_id, len(batch), failures, self.gated(), error,
            )
            hint = self.retry_after()
            if not self.gated():
                await self._sleep(max(hint, min(self.retry_initial_s * 2 ** (failures - 1),
                                                self.retry_max_s)))
            elif hint > 0:
                await self._sleep(hint)
            await self.tick()

    async def _fetch_batch(self) -> list[LogRecord]:
        """One batch: a fetch, then (with ``batch_wait_s``) more until count, bytes or time."""
        async with self._consumer_lock:
            batch = await self.consumer.fetch(self.batch_size, self.fetch_timeout_s)
        if not batch or self.batch_wait_s <= 0 or len(batch) >= self.batch_size:
            return batch  # (a full first fetch is the busy case: no byte count per record)
        size = sum(len(r.value) + len(r.key or b"") for r in batch)
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.batch_size and not (self.batch_bytes and size >= self.batch_bytes):
            self.ahead = len(batch)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            async with self._consumer_lock:
                more = await self.consumer.fetch(self.batch_size - len(batch),
                                                 min(left, self.fetch_timeout_s))
            batch += more
            size += sum(len(r.value) + len(r.key or b"") for r in more)
        return batch

    async def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if offsets:
            async with self._consumer_lock:
                await self.consumer.commit(offsets)

    async def decode_batch(
        self, batch: list[LogRecord]
    ) -> tuple[list[tuple[LogRecord, Any]], list[DeadLetter]]:
        """``(record, decoded)`` pairs, and DLQ records (reason ``undecodable``) for the rest.

        A value with its topic's current schema goes straight to the codec's compiled
        decoder (``decoder_for``, looked up once per run of one topic and header: the
        decode is most of a sink's CPU, and ``decode``'s own look-ups per value cost a
        fifth more); any other value, or one that decoder refuses, takes ``decode``,
        which says why."""
        items: list[tuple[LogRecord, Any]] = []
        dead: list[DeadLetter] = []
        sync_decode = self.codec.decode  # no coroutine per record: the async path is rare
        decoder_for = getattr(self.codec, "decoder_for", None)
        topic, header, fast = "", b"", None
        for rec in batch:
            value = rec.value
            if decoder_for is not None:
                if rec.topic != topic or not value.startswith(header):
                    topic, header = rec.topic, value[:5]
                    if len(header) == 5 and header[0] == 0:  # the wire format's magic byte
                        fast = decoder_for(topic, value)
                    else:
                        header, fast = b"\xff", None  # no wire-format value starts so
                if fast is not None:
                    try:
                        items.append((rec, fast(value, 5)))
                        continue
                    except (*DECODE_ERRORS, struct.error):
                        pass
            try:
                try:
                    obj = sync_decode(rec.topic, rec.value)
                except SchemaUnavailable:
                    obj = await self.codec.decode_async(rec.topic, rec.value)
                items.append((rec, obj))
            except (*DECODE_ERRORS, SchemaUnavailable) as exc:
                dead.append(self.dead_record(rec, None, "undecodable", describe_error(exc)))
        return items, dead

    def dead_record(self, rec: LogRecord, obj: Any, reason: str, error: str) -> DeadLetter:
        """The DLQ record of ``rec``: its reading, or a stand-in naming the asset
        and time of another record kind (``obj`` None: undecodable)."""
        if isinstance(obj, Reading):
            reading = obj
        else:
            reading = Reading(
                asset_id=getattr(obj, "asset_id", ""),
                parameter=getattr(obj, "parameter", ""),
                value=None, quality=Quality.BAD,
                device_time=getattr(obj, "window_start", None),
                gateway_time=rec.timestamp_ns,
            )
        return DeadLetter(
            reading=reading, reason=reason, stage=self.id, error=error,
            source_topic=rec.topic, source_partition=rec.partition, source_offset=rec.offset,
            gateway_time=now_ns(),
        )

    async def dead_letter(self, dead: list[DeadLetter]) -> None:
        """Append refused records to ``dlq_topic`` (reason, source offset); durable on return."""
        if not dead:
            return
        topic = self.dlq_topic
        await self.log.append(
            topic, [(d.reading.asset_id.encode(), self.codec.encode(topic, d)) for d in dead]
        )
        self.rejected += len(dead)
        log.warning("%s_rejected sink_id=%s count=%d first_error=%s",
                    self.event, self.sink_id, len(dead), dead[0].error)

    async def _watch_lag(self) -> None:
        """Records in the log not yet confirmed by the destination (needs ``watermarks``)."""
        watermarks = getattr(self.log, "watermarks", None)
        position = getattr(self.consumer, "position", None)
        last = (time.monotonic(), self.delivered)
        while True:
            now = time.monotonic()
            self.rate = (self.delivered - last[1]) / max(now - last[0], 1e-9)
            last = (now, self.delivered)
            if watermarks is None or position is None:
                await anyio.sleep(1.0)
                continue
            # position first: the ends read after it are at least as new, so the
            # lag is never negative (it was -1 when a fetch landed between the reads)
            pos = position()
            taken = sum(pos.values()) - self.pending - self.ahead
            high = 0
            for topic in self.topics:
                high += sum(n for _, n in (await watermarks(topic)).values())
            if pos:
                self.lag = float(max(0, high - taken))
            await anyio.sleep(1.0)

    def metrics(self) -> dict[str, float]:
        m = {
            "delivered_total": float(self.delivered),
            "batches_total": float(self.batches),
            "errored_batches_total": float(self.errored_batches),
            "rejected_total": float(self.rejected),
            "pending_records": float(self.pending),
            "lag_records": self.lag,
            "last_batch_seconds": self.last_batch_s,
            "busy_seconds_total": self.busy_s,
            "records_per_second": self.rate,
        }
        if self.breaker is not None:
            m.update(self.breaker.metrics())
        return m

    def snapshot(self) -> Snapshot:
        snap = super().snapshot()
        snap.children = [b.snapshot() for b in self.breakers()]
        return snap
