"""The synthetic source's session actor."""

from __future__ import annotations

import time

import anyio

from otgate import __version__
from otgate.actors.actor import Actor
from otgate.actors.context import BuildContext
from otgate.actors.records import Classification, Reading, now_ns
from otgate.protocols.synthetic.config import SyntheticAdapter
from otgate.simulations.signals import make_signal


class SyntheticSession(Actor):
    """Samples every point each ``interval`` and publishes one batch.

    EVENT points are published only when their value changed. Publishing
    waits while the log pushes back, so a slow log slows sampling instead of
    dropping readings.
    """

    kind = "session"

    def __init__(self, cfg: SyntheticAdapter, ctx: BuildContext) -> None:
        super().__init__(cfg.id)
        self.cfg = cfg
        self.ctx = ctx
        self.seq = 0
        self.published = 0
        self._last: dict[str, object] = {}

    async def main(self) -> None:
        event = Classification.EVENT
        # per point: (sampler, parameter, unit, classification, is an EVENT point)
        points = [
            (make_signal(p.signal, seed=f"{self.cfg.seed}:{p.parameter}"), p.parameter, p.unit,
             p.classification, p.classification is event)
            for p in self.cfg.points
        ]
        asset_id, adapter_id = self.cfg.asset_id, self.cfg.id
        last = self._last
        t0 = time.monotonic()
        next_tick = t0
        while True:
            now = now_ns()
            t = time.monotonic() - t0
            batch: list[Reading] = []
            seq = self.seq
            for sample, parameter, unit, classification, is_event in points:
                value = sample(t)
                if is_event:
                    if last.get(parameter) == value:
                        continue
                    last[parameter] = value
                seq += 1
                batch.append(
                    Reading(
                        asset_id=asset_id,
                        parameter=parameter,
                        value=value,
                        unit=unit,
                        classification=classification,
                        device_time=now,
                        gateway_time=now,
                        clock_skew_ms=0,
                        seq=seq,
                        adapter_id=adapter_id,
                        adapter_version=__version__,
                    )
                )
            self.seq = seq
            if batch:
                await self.ctx.publish(batch)
                self.published += len(batch)
            next_tick += self.cfg.interval
            await anyio.sleep(max(0.0, next_tick - time.monotonic()))

    def metrics(self) -> dict[str, float]:
        return {"readings_published": float(self.published), "seq": float(self.seq)}
