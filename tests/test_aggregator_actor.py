"""Aggregator actor on the embedded log: output, restart mid-window, crash before checkpoint."""

from __future__ import annotations

import anyio
import pytest
from stage_codec import MsgpackCodec
from stage_log import open_log, read_all, wait_until

from otgate.actors.aggregator.actor import AggregatorActor
from otgate.actors.aggregator.config import AggregatorConfig
from otgate.actors.records import Reading

S = 1_000_000_000
T0 = 1_700_000_000 * S
codec = MsgpackCodec()


def rd(t: float, value: float, asset: str = "a") -> tuple[bytes, bytes]:
    dt = T0 + round(t * S)
    r = Reading(asset_id=asset, parameter="p", value=value, device_time=dt, gateway_time=dt)
    return asset.encode(), codec.encode("telemetry.clean", r)


async def feed(lg, start: float, stop: float, step: float = 0.1) -> None:
    n = round((stop - start) / step)
    await lg.append("telemetry.clean", [rd(start + i * step, start + i * step)
                                        for i in range(n)])


def cfg(**kw) -> AggregatorConfig:
    base = dict(resolutions=["1s", "1min"], watermark_lateness_s=0.5, idle_timeout_s=60,
                checkpoint_interval_s=0.1)
    base.update(kw)
    return AggregatorConfig(**base)


async def windows_1s(lg) -> list:
    return await read_all(lg, codec, "telemetry.1s")


@pytest.mark.anyio
async def test_emits_1s_windows_with_stats(tmp_path):
    lg = await open_log(tmp_path)
    try:
        await feed(lg, 0.0, 3.0)
        agg = AggregatorActor("agg", cfg(), lg, codec, tmp_path)
        async with anyio.create_task_group() as tg:
            await tg.start(agg.run)

            async def two() -> bool:
                return len(await windows_1s(lg)) >= 2

            await wait_until(two)
            tg.cancel_scope.cancel()
        out = await windows_1s(lg)
        assert [a.window_start for a in out] == [T0, T0 + S]
        first = out[0]
        assert first.count == 10 and first.min == 0.0 and first.max == pytest.approx(0.9)
        assert first.mean == pytest.approx(0.45)
        assert await read_all(lg, codec, "telemetry.1min") == []  # still open
        assert agg.metrics()["open_windows"] == 2.0  # [2,3) and the minute
    finally:
        await lg.close()


async def run_until(lg, tmp_path, n_1s: int, config: AggregatorConfig) -> AggregatorActor:
    agg = AggregatorActor("agg", config, lg, codec, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(agg.run)

        async def enough() -> bool:
            return len(await windows_1s(lg)) >= n_1s

        await wait_until(enough)
        await anyio.sleep(0.3)  # let a second emission (a duplicate) show if there is one
        tg.cancel_scope.cancel()
    return agg


@pytest.mark.anyio
@pytest.mark.parametrize("checkpointed", [True, False], ids=["checkpointed", "crash-before-ckpt"])
async def test_restart_mid_window_no_window_twice_or_lost(tmp_path, checkpointed):
    lg = await open_log(tmp_path)
    try:
        await feed(lg, 0.0, 2.6)  # 26 readings: [0,1) [1,2) close, [2,3) has 6 of 10
        first = await run_until(
            lg, tmp_path, 2, cfg(checkpoint_interval_s=0.1 if checkpointed else 3600)
        )
        if not checkpointed:
            # a crash after the append but before any checkpoint: the file knows nothing
            (tmp_path / "agg.ckpt").unlink()
        assert first.windows.open_count == 2
        await feed(lg, 2.6, 4.6)  # completes [2,3) and [3,4)
        second = await run_until(lg, tmp_path, 4, cfg())
        out = await windows_1s(lg)
        assert [a.window_start for a in out] == [T0 + i * S for i in range(4)]
        # [2,3) spans the restart and is complete: 6 readings before, 4 after
        assert out[2].count == 10 and out[2].min == 2.0 and out[2].max == pytest.approx(2.9)
        m = second.metrics()
        assert m["replayed_into_emitted_total"] + m["replayed_into_restored_total"] > 0
        assert (second.recovered_marks > 0) == (not checkpointed)
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_late_reading_counted_not_aggregated(tmp_path):
    lg = await open_log(tmp_path)
    try:
        await feed(lg, 0.0, 1.0)
        await lg.append("telemetry.clean", [rd(1.3, 0), rd(0.95, 100.0), rd(1.6, 0),
                                            rd(0.99, 500.0), rd(2.6, 0)])
        agg = AggregatorActor("agg", cfg(resolutions=["1s"]), lg, codec, tmp_path)
        async with anyio.create_task_group() as tg:
            await tg.start(agg.run)

            async def two() -> bool:
                return len(await windows_1s(lg)) >= 2

            await wait_until(two)
            tg.cancel_scope.cancel()
        out = await windows_1s(lg)
        assert out[0].max == 100.0  # 0.95 came 0.35 s late: within the 0.5 s lateness
        assert out[0].count == 11
        assert agg.metrics()["late_1s_total"] == 1.0  # 0.99 came after [0,1) closed
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_minute_window_persisted_across_restart_commits_move_on(tmp_path):
    lg = await open_log(tmp_path)
    try:
        await feed(lg, 0.0, 2.6)
        first = await run_until(lg, tmp_path, 2, cfg(checkpoint_interval_s=0.05))
        assert first.checkpoints > 0
        c = lg.consumer("aggregator", ["telemetry.clean"])  # the aggregator's group
        (rec, *_) = await c.fetch(1, 0.1)
        await c.close()
        assert rec.offset == 20  # held by the open 1 s window only, not by the minute
        await feed(lg, 2.6, 41.0)
        second = await run_until(lg, tmp_path, 40, cfg())
        assert second.restored_windows == 1
        assert second._restored.windows == []  # the decoded file is not kept once restored
        (minute,) = await read_all(lg, codec, "telemetry.1min")
        # T0 is 20 s past a minute: the minute window [T0-20 s, T0+40 s) holds 0.0 .. 39.9 s
        assert minute.window_start == T0 - 20 * S
        assert minute.count == 400 and minute.min == 0.0
        assert minute.max == pytest.approx(39.9)
        assert minute.mean == pytest.approx(sum(i / 10 for i in range(400)) / 400)
    finally:
        await lg.close()
