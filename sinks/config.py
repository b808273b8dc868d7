"""Config fields every log sink on the shared delivery loop has (sinks/base.py).

A sink's config Struct inherits ``LogSinkConfig``, adds its destination
fields and names its actor (``actor_class``) and its destination for logs and
/health (``destination``, no secrets). ``build`` makes the actor, and
``sink_args()`` are the matching ``LogSink`` keyword arguments, breaker
included, so every sink actor starts with
``super().__init__(actor_id, log_backend=..., codec=..., **config.sink_args(actor_id))``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import msgspec

from otgate.config.base import Identifier, NonNegativeSeconds, PositiveSeconds, StrictStruct

if TYPE_CHECKING:
    from otgate.actors.context import BuildContext


class LogSinkConfig(StrictStruct):
    """Consumer group, batching, retry, circuit breaker and DLQ of one sink."""

    id: Identifier
    "Sink id: names the actor, its circuit breaker and (by default) its consumer group."
    topics: list[str] = msgspec.field(default_factory=lambda: ["telemetry.clean"])
    "Log topics this sink reads."
    group: Identifier | None = None
    "Consumer group; default 'sink.<id>'."
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 5000
    "Records per batch at most."
    batch_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0
    "A batch closes once its keys and values reach this many bytes (0 = no limit); "
    "only with batch_wait_s > 0."
    batch_wait_s: NonNegativeSeconds = 0.0
    "How long a started batch waits for more records (0 = send what one fetch returned)."
    fetch_timeout_s: PositiveSeconds = 0.2
    "How long an idle sink waits for records before looking again."
    breaker_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    "Consecutive failed batches that open the circuit breaker."
    breaker_cooldown_s: PositiveSeconds = 5.0
    "How long an open breaker waits before one trial batch."
    retry_initial_s: PositiveSeconds = 0.2
    "Delay after a failed batch while the breaker is still closed; doubles per failure."
    retry_max_s: PositiveSeconds = 5.0
    "Upper bound of that delay."
    dlq_topic: str = "dlq.telemetry"
    "Where records the destination refuses for good go (reason and source offset)."
    prefetch: bool = True
    "Fetch (and decode/encode) the next batch from the log while the current one is sent, "
    "and commit a delivered batch while the next one is sent (the log's, the sink's and the "
    "destination's work overlap; one batch more in memory)."

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError("topics: at least one topic")
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError("retry_initial_s must be <= retry_max_s")

    @property
    def consumer_group(self) -> str:
        return self.group or f"sink.{self.id}"

    def destination(self) -> str:
        """Where the sink writes, for logs, its breaker and /health (no secrets)."""
        raise NotImplementedError

    def actor_class(self) -> type:
        """The ``LogSink`` subclass this config builds (imported on use: actors import
        their config, not the other way round)."""
        raise NotImplementedError

    def build(self, ctx: BuildContext) -> Any:
        """The sink actor ``sink.<id>``; needs ``ctx.log`` and a codec (``stage_codec``)."""
        from otgate.actors.stage_codec import stage_codec

        if ctx.log is None:
            raise ValueError(f"sink {self.id}: no log in this bulkhead")
        return self.actor_class()(f"sink.{self.id}", self, ctx.log, stage_codec(ctx),
                                  gateway_id=ctx.gateway_id)

    def breaker(self, actor_id: str, destination: str, **clock: Any) -> Any:
        """The destination's circuit breaker (``clock``/``sleep`` for tests)."""
        from otgate.actors.breaker import CircuitBreaker

        return CircuitBreaker(f"{actor_id}.breaker", destination=destination,
                              failure_threshold=self.breaker_failures,
                              cooldown_s=self.breaker_cooldown_s, **clock)

    def loop_args(self) -> dict[str, Any]:
        """``LogSink.__init__`` keyword arguments (all but the breaker and the log)."""
        return dict(
            sink_id=self.id, group=self.consumer_group, topics=self.topics,
            batch_size=self.batch_size, batch_bytes=self.batch_bytes,
            batch_wait_s=self.batch_wait_s, fetch_timeout_s=self.fetch_timeout_s,
            retry_initial_s=self.retry_initial_s, retry_max_s=self.retry_max_s,
            dlq_topic=self.dlq_topic, prefetch=self.prefetch,
        )

    def sink_args(
        self,
        actor_id: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = anyio.sleep,
    ) -> dict[str, Any]:
        """``LogSink.__init__`` keyword arguments of a sink with one destination: the
        loop's, one breaker guarding ``destination()``, and ``sleep`` (tests pass
        ``clock``/``sleep``)."""
        return dict(
            breaker=self.breaker(actor_id, self.destination(), clock=clock, sleep=sleep),
            sleep=sleep, **self.loop_args(),
        )
