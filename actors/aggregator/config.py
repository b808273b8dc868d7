"""Config of the aggregator stage (``[processing.aggregator]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from otgate.config.base import Identifier, NonNegativeSeconds, PositiveSeconds, StrictStruct

Resolution = Literal["1s", "1min", "1h"]


if TYPE_CHECKING:
    from otgate.actors.context import BuildContext


class AggregatorConfig(StrictStruct):
    """Tumbling device-time windows over ``telemetry.clean`` → ``telemetry.<resolution>``."""

    enabled: bool = True
    "Run the aggregator stage."
    group: Identifier = "aggregator"
    "Consumer group on the input topic; '<group>.emitted' tracks what was written."
    input: str = "telemetry.clean"
    "Topic to aggregate."
    resolutions: list[Resolution] = msgspec.field(default_factory=lambda: ["1s", "1min", "1h"])
    "Window lengths to compute; each is written to 'telemetry.<resolution>'."
    watermark_lateness_s: NonNegativeSeconds = 2.0
    "How late (device time, behind the newest reading of the asset) a reading may arrive and "
    "still count; a window closes once the watermark passes its end by this much."
    idle_timeout_s: PositiveSeconds = 10.0
    "An asset silent this long (processing time) has its windows closed once the wall clock "
    "is past their end plus the lateness."
    max_samples: Annotated[int, msgspec.Meta(ge=16, le=1_000_000)] = 2048
    "Values kept per window for p50/p95/p99; beyond it a deterministic reservoir sample."
    persist_from: Resolution | None = "1min"
    "Windows this long and longer are saved with their statistics at each checkpoint, so they "
    "do not hold back the input commit (a restart replays ~one checkpoint interval plus one "
    "short window instead of up to 1 h). None: every window is rebuilt by replaying its input."
    checkpoint_interval_s: PositiveSeconds = 30.0
    "How often the checkpoint (emitted-window marks, persisted windows) is saved under the "
    "state directory. A restart replays about this much input. The file holds up to "
    "8 bytes x max_samples per open persisted window: e.g. 2,000 parameters with 1 min and "
    "1 h windows at >= 35 Hz is ~65 MB per checkpoint (measured here: 0.4 s of CPU)."
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 5000
    "Records fetched per batch."

    def __post_init__(self) -> None:
        if not self.resolutions:
            raise ValueError("resolutions: at least one of '1s', '1min', '1h'")
        if len(set(self.resolutions)) != len(self.resolutions):
            raise ValueError(f"resolutions: duplicates in {self.resolutions}")

    def build(self, ctx: BuildContext) -> Any:
        """The stage actor on ``ctx.log`` (codec: ``ctx.extras['codec']`` or one built
        from ``ctx.extras['schemas']``)."""
        from otgate.actors.aggregator.actor import AggregatorActor
        from otgate.actors.stage_codec import stage_codec

        if ctx.log is None:
            raise ValueError("the processing stage needs a log in its bulkhead")
        return AggregatorActor("aggregator", self, ctx.log, stage_codec(ctx), ctx.state_dir)
