"""The alert router actor: ``alarms.clean`` → webhooks, Slack, mail; at-least-once.

It runs on the shared ``LogSink`` loop (own consumer group). Each batch of
transitions goes through ``Routing`` (routes, dedupe, digest, escalation
timers) into an outbox of notifications; the outbox is flushed with one task
per destination, each destination behind its own circuit breaker and its
own capped exponential retry delay, in order (a raise is never overtaken by
its clear). A destination that is down keeps its notifications; the others
get theirs at once and never again for that transition (a confirmed
notification leaves the outbox), so a retry creates no duplicates at the
healthy ones, and every webhook POST carries ``Idempotency-Key: alarm_id:seq``
for the receiver to drop the one that can repeat: a send whose reply was lost.

Commits: the group's offset stops at the first transition still in the
outbox or the digest, so the log keeps what was not yet confirmed
everywhere. The router state (outbox, digest, escalation timers, dedupe
times, last seq per alarm) is checkpointed to a JSON file (atomically
replaced) before every commit. After a restart the checkpoint resends its
outbox, replayed transitions are recognised by ``seq`` and dropped, and
escalations fire when due (immediately if the deadline passed while down).
Lost on a crash: at most the effect of sends confirmed after the last
checkpoint (sent again: at-least-once). Lost with the checkpoint file:
escalation timers and digest contents of transitions already committed.

A destination refusing a message for good dead-letters it (``dlq_topic``,
reason ``rejected_by_destination``). When the outbox holds ``max_pending``
notifications the router stops reading (the log keeps the alarms): the
outbox is bounded by ``max_pending`` plus the notifications of one batch.
Destinations are flushed concurrently, but a flush waits for its slowest
destination (bounded by its ``timeout_s``) before the next batch is read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec

from otgate.actors.breaker import CircuitBreaker
from otgate.actors.log.base import LogBackend, LogRecord
from otgate.actors.log.schemas import SchemaUnavailable
from otgate.actors.messages import State
from otgate.actors.records import Alarm, Classification, DeadLetter, Quality, Reading, now_ns
from otgate.actors.stage_codec import decode
from otgate.actors.statefile import write_atomic
from otgate.actors.validator.actor import DECODE_ERRORS
from otgate.sinks.alert_router.client import Client, EmailClient, SendError, WebhookClient
from otgate.sinks.alert_router.config import AlertRouter, WebhookDestination
from otgate.sinks.alert_router.routing import Notice, RouterState, Routing, Source
from otgate.sinks.base import LogSink, describe_error
from otgate.sinks.outcome import Outcome

log = logging.getLogger("otgate.sinks.alert_router")


class AlertRouterActor(LogSink):
    """Routes alarm transitions to people (see the module doc)."""

    kind = "sink.alert_router"
    event = "alert_router"

    def __init__(
        self,
        actor_id: str,
        config: AlertRouter,
        log_backend: LogBackend,
        codec: Any,
        *,
        checkpoint: Path | None = None,
        gateway_id: str = "",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = anyio.sleep,
    ) -> None:
        super().__init__(
            actor_id, sink_id=config.id, group=config.consumer_group, topics=[config.topic],
            log_backend=log_backend, codec=codec, batch_size=config.batch_size,
            fetch_timeout_s=config.fetch_timeout_s, retry_initial_s=config.retry_initial_s,
            retry_max_s=config.retry_max_s, dlq_topic=config.dlq_topic, sleep=sleep,
        )
        self.config = config
        self.checkpoint = checkpoint
        self.gateway_id = gateway_id
        self._monotonic = monotonic
        self.dest_breakers = {
            d.id: CircuitBreaker(
                f"{actor_id}.{d.id}",
                destination=f"{'webhook' if isinstance(d, WebhookDestination) else 'email'} {d.id}",
                failure_threshold=config.breaker_failures,
                cooldown_s=config.breaker_cooldown_s, clock=monotonic, sleep=sleep,
            )
            for d in config.destinations
        }
        self.clients: dict[str, Client] = {}
        self.session: aiohttp.ClientSession | None = None
        self.routing = Routing(config, RouterState(), clock)
        self.retry_at = {d.id: 0.0 for d in config.destinations}
        self.failures = {d.id: 0 for d in config.destinations}
        self.sent = 0
        self.send_failures = 0
        self.refused = 0
        self._read_upto: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._dirty = False  # the state changed since the last checkpoint

    # -- lifecycle ------------------------------------------------------------
    async def setup(self) -> None:
        await super().setup()
        self.routing.state = self._load()
        self.session = aiohttp.ClientSession()
        for d in self.config.destinations:
            self.clients[d.id] = (
                WebhookClient(d, self.session, self.gateway_id)
                if isinstance(d, WebhookDestination) else EmailClient(d, self.gateway_id)
            )

    async def close_client(self) -> None:
        if self.session is not None:
            await self.session.close()

    def breakers(self) -> list[CircuitBreaker]:
        return list(self.dest_breakers.values())

    # -- the loop's hooks -----------------------------------------------------
    async def deliver(self, batch: list[LogRecord]) -> tuple[Outcome, str]:
        """Route a batch into the outbox, flush, checkpoint. DELIVERED once the
        checkpoint holds what is not yet sent (the commit stops before it)."""
        dead: list[DeadLetter] = []
        for rec in batch:
            tp = (rec.topic, rec.partition)
            if rec.offset < self._read_upto.get(tp, 0):
                continue  # the same batch again after a failed checkpoint
            try:
                alarm = await decode(self.codec, rec.topic, rec.value)
                if not isinstance(alarm, Alarm):
                    raise TypeError(f"{type(alarm).__name__} is not an Alarm")
            except (*DECODE_ERRORS, TypeError, SchemaUnavailable) as exc:
                dead.append(self._dead(None, Source(rec.topic, rec.partition, rec.offset),
                                       "undecodable", describe_error(exc)))
            else:
                self.routing.accept(alarm, Source(rec.topic, rec.partition, rec.offset))
            self._read_upto[tp] = rec.offset + 1
            self._dirty = True
        await self.dead_letter(dead)
        await self.flush()
        try:
            await self.save()
        except OSError as exc:
            return Outcome.ERRORED, f"checkpoint: {describe_error(exc)}"
        return Outcome.DELIVERED, ""

    def committable(self, batch: list[LogRecord]) -> dict[tuple[str, int], int]:
        """Past every record read, but not past one still waiting to be sent."""
        offsets = dict(self._read_upto)
        for s in self.routing.held():
            tp = (s.topic, s.partition)
            if tp in offsets:
                offsets[tp] = min(offsets[tp], s.offset)
        return {tp: o for tp, o in offsets.items() if self._committed.get(tp) != o}

    async def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        await super().commit(offsets)
        self._committed.update(offsets)

    async def tick(self) -> None:
        """Timers (escalations, the digest), then retries of waiting notifications."""
        if self.routing.due():
            self._dirty = True
        await self.flush()
        try:
            await self.save()
        except OSError as exc:  # commit nothing the checkpoint does not hold; retried next turn
            self.last_error = f"checkpoint: {describe_error(exc)}"
            log.warning("alert_checkpoint_failed sink_id=%s error=%s", self.sink_id,
                        self.last_error)
            return
        await self.commit(self.committable([]))
        self._update_state()

    def _update_state(self) -> None:
        """DEGRADED while a destination is failing (its notifications wait), else RUNNING."""
        if self.state in (State.RUNNING, State.DEGRADED):
            failing = any(self.failures.values())
            self.state = State.DEGRADED if failing else State.RUNNING

    async def wait_allowed(self) -> None:
        """While the outbox is full, read nothing: retry its notifications instead."""
        while len(self.routing.state.outbox) >= self.config.max_pending:
            await self._sleep(self.fetch_timeout_s)
            await self.tick()

    def gated(self) -> bool:
        return False  # destinations are gated one by one in flush()

    def on_delivered(self) -> None:
        self._update_state()  # destination breakers record each send

    def on_errored(self, error: str) -> None:
        pass

    # -- sending ----------------------------------------------------------------
    async def flush(self) -> None:
        """Send what each destination may take now, one task per destination."""
        outbox = self.routing.state.outbox
        if not outbox:
            return
        by_dest: dict[str, list[Notice]] = {}
        for n in outbox:
            by_dest.setdefault(n.destination, []).append(n)
        done: set[int] = set()
        dead: list[DeadLetter] = []
        async with anyio.create_task_group() as tg:
            for dest_id, notices in by_dest.items():
                tg.start_soon(self._flush_destination, dest_id, notices, done, dead)
        if done:
            self.routing.state.outbox = [n for n in self.routing.state.outbox
                                         if id(n) not in done]
            self._dirty = True
        await self.dead_letter(dead)

    async def _flush_destination(self, dest_id: str, notices: list[Notice], done: set[int],
                                 dead: list[DeadLetter]) -> None:
        breaker = self.dest_breakers[dest_id]
        client = self.clients[dest_id]
        for n in notices:
            if self._monotonic() < self.retry_at[dest_id] or not breaker.core.allow():
                return
            try:
                await client.send(n)
            except SendError as exc:
                if exc.retriable:
                    self._failed(dest_id, breaker, exc.reason)
                    return
                breaker.record_success()  # it answered: reachable, this message refused
                self.refused += 1
                done.add(id(n))
                dead += [self._dead(a, s, "rejected_by_destination", f"{dest_id}: {exc.reason}")
                         for a, s in _pairs(n)]
                continue
            breaker.record_success()
            if self.failures[dest_id]:
                log.warning("alert_destination_recovered sink_id=%s destination=%s "
                            "after_failures=%d", self.sink_id, dest_id, self.failures[dest_id])
            self.failures[dest_id] = 0
            self.sent += 1
            done.add(id(n))

    def _failed(self, dest_id: str, breaker: CircuitBreaker, reason: str) -> None:
        self.failures[dest_id] += 1
        self.send_failures += 1
        f = self.failures[dest_id]
        delay = min(self.config.retry_initial_s * 2 ** (f - 1), self.config.retry_max_s)
        self.retry_at[dest_id] = self._monotonic() + delay
        breaker.record_failure(reason)
        self.last_error = f"{dest_id}: {reason}"
        log.warning("alert_send_failed sink_id=%s destination=%s attempt=%d retry_in_s=%.2f "
                    "breaker=%s error=%s", self.sink_id, dest_id, f, delay,
                    breaker.breaker_state.value, reason)

    def _dead(self, a: Alarm | None, s: Source | None, reason: str, error: str) -> DeadLetter:
        reading = Reading(
            asset_id=a.asset_id if a else "", parameter=a.parameter if a else "",
            value=a.value if a else None, quality=Quality.BAD,
            classification=Classification.ALARM, device_time=a.device_time if a else None,
            gateway_time=a.gateway_time if a else now_ns(), seq=a.seq if a else 0,
        )
        return DeadLetter(
            reading=reading, reason=reason, stage=self.id, error=error,
            source_topic=s.topic if s else "", source_partition=s.partition if s else -1,
            source_offset=s.offset if s else -1, gateway_time=now_ns(),
        )

    # -- checkpoint -------------------------------------------------------------
    def _load(self) -> RouterState:
        if self.checkpoint is None or not self.checkpoint.exists():
            return RouterState()
        raw = self.checkpoint.read_bytes()
        try:
            state = msgspec.json.decode(raw, type=RouterState)
        except msgspec.DecodeError as exc:
            log.warning("alert_checkpoint_unreadable sink_id=%s path=%s error=%s",
                        self.sink_id, self.checkpoint, describe_error(exc))
            return RouterState()
        log.info("alert_checkpoint_loaded sink_id=%s pending=%d escalations=%d digest=%d",
                 self.sink_id, len(state.outbox), len(state.escalations), len(state.digest))
        return state

    async def save(self) -> None:
        """Write the state when it changed: temp file, fsync, atomic rename."""
        if self.checkpoint is None or not self._dirty:
            return
        raw = msgspec.json.encode(self.routing.state)
        await anyio.to_thread.run_sync(write_atomic, self.checkpoint, raw)
        self._dirty = False

    def metrics(self) -> dict[str, float]:
        m = super().metrics()
        m.update({f"{k}_total": float(v) for k, v in self.routing.counts.items()})
        st = self.routing.state
        m.update({
            "sent_total": float(self.sent),
            "send_failures_total": float(self.send_failures),
            "refused_total": float(self.refused),
            "pending_notices": float(len(st.outbox)),
            "digest_pending": float(len(st.digest)),
            "escalations_pending": float(sum(len(v) for v in st.escalations.values())),
        })
        return m


def _pairs(n: Notice) -> list[tuple[Alarm, Source | None]]:
    if len(n.sources) == len(n.alarms):
        return list(zip(n.alarms, n.sources, strict=True))
    return [(a, None) for a in n.alarms]

