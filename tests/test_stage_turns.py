"""The aggregator's long batches let the other tasks of its event loop run (``stage_turns``),
and what it writes does not depend on where the turns fell."""

from __future__ import annotations

import anyio
import pytest
from stage_codec import MsgpackCodec
from stage_log import open_log, read_all

from otgate.actors.aggregator.actor import AggregatorActor
from otgate.actors.aggregator.config import AggregatorConfig
from otgate.actors.records import Reading

S = 1_000_000_000
T0 = 1_700_000_000 * S
N = 4_000
codec = MsgpackCodec()


def readings() -> list[tuple[bytes, bytes]]:
    """20 streams at 10 Hz for 20 s of device time."""
    out = []
    for i in range(N):
        dt = T0 + (i // 20) * S // 10
        r = Reading(asset_id="a", parameter=f"p{i % 20}", value=float(i % 97), device_time=dt,
                    gateway_time=dt)
        out.append((b"a", codec.encode("telemetry.raw", r)))
    return out


async def batch_with_ticker(stage, records) -> int:
    """Run ``stage.process(records)`` beside a task that counts its own turns; the count
    of ticks while the batch ran."""
    ticks, done = 0, False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.lowlevel.checkpoint()  # the ticker is waiting for its next turn
        start = ticks
        await stage.process(records)
        during = ticks - start
        done = True
    return during


async def fetch_all(consumer) -> list:
    out = []
    while recs := await consumer.fetch(100_000, 0.05):
        out += recs
    return out


@pytest.mark.anyio
@pytest.mark.parametrize("slice_s", [0.0, 3600.0])
async def test_aggregator_batch_takes_turns(tmp_path, slice_s):
    lg = await open_log(tmp_path)
    try:
        await lg.append("telemetry.clean", readings())
        cfg = AggregatorConfig(resolutions=["1s"], watermark_lateness_s=0.5, persist_from=None)
        agg = AggregatorActor("agg", cfg, lg, codec, tmp_path)
        agg.turns.slice_s = slice_s
        await agg.setup()
        records = await fetch_all(agg.consumer)
        during = await batch_with_ticker(agg, records)
        await agg.teardown()
        windows = await read_all(lg, codec, "telemetry.1s")
        # 20 s of device time, the last 1 s windows still open behind the lateness
        assert len(windows) == 19 * 20
        assert {w.count for w in windows} == {10}
        if slice_s:
            assert agg.turns.turns == 0
        else:  # in the batch, and between the emitted windows (one every 16)
            assert agg.turns.turns >= N // 64 + len(windows) // 16 and during >= N // 64
    finally:
        await lg.close()
