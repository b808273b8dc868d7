"""Config of the synthetic source (signal models sampled in-process)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from otgate.actors.records import Classification
from otgate.config.base import Identifier, PositiveSeconds, StrictStruct
from otgate.simulations.signals import Constant, SignalConfig

if TYPE_CHECKING:
    from otgate.actors.actor import Actor
    from otgate.actors.context import BuildContext


class SyntheticPoint(StrictStruct):
    """One simulated parameter."""

    parameter: str
    """Parameter name written on each reading."""
    unit: str = ""
    """Engineering unit."""
    signal: SignalConfig = Constant()
    """Signal model (``kind = "sine" | "ramp" | "step" | ...``)."""
    classification: Classification = Classification.TELEMETRY
    """TELEMETRY (every sample), EVENT (on change) or ALARM (device alarm bit)."""


class SyntheticAdapter(StrictStruct, tag="synthetic", tag_field="type"):
    """A source that samples signal models: for demos, soak tests and benchmarks.

    Readings carry ``device_time`` (the simulated device's clock) and a ``seq``
    that grows by one per reading, so a checker can count what was produced.
    """

    id: Identifier
    """Adapter id (unique across adapters)."""
    asset_id: str
    """Asset the readings belong to (the log key)."""
    points: list[SyntheticPoint]
    """The parameters it produces."""
    interval: PositiveSeconds = 1.0
    """Seconds between samples."""
    seed: int = 0
    """Seed of the noise generators (same seed, same signal)."""

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("points: at least one point is required")

    def build(self, ctx: BuildContext) -> Actor:
        from otgate.protocols.synthetic.session import SyntheticSession

        return SyntheticSession(self, ctx)
