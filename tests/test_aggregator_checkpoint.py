"""The aggregator with a large state: the checkpoint file is written in pieces (the
same bytes as one encode), and the event loop keeps running while a large one is
written or while an hour's windows of every stream are emitted at once."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import msgspec
import pytest
from stage_codec import MsgpackCodec
from stage_log import open_log, read_all

from otgate.actors.aggregator import checkpoint
from otgate.actors.aggregator.actor import AggregatorActor
from otgate.actors.aggregator.config import AggregatorConfig
from otgate.actors.aggregator.stats import WindowStats
from otgate.actors.aggregator.windows import Windows

S = 1_000_000_000
T0 = 1_700_000_000 * S
TP = ("telemetry.clean", 0)


def filled(streams: int, samples: int = 2048) -> Windows:
    """``streams`` x (1 min, 1 h) persisted windows of ``samples`` values each,
    restored from states (much faster than adding the readings)."""
    st = WindowStats(samples, seed=1)
    for i in range(samples + 300):  # past max_samples: the reservoir's state too
        st.add_fast(float(i % 97), 0, float(i % 97))
    state = st.state()
    w = Windows(["1s", "1min", "1h"], lateness_ns=2 * S, idle_timeout_s=10,
                max_samples=samples, persisted=frozenset({"1min", "1h"}))
    w.import_state([
        [f"dev{i // 100}", f"p{i % 100}", res, T0, T0 + size, "bar",
         [["telemetry.clean", 0, i]], [["telemetry.clean", 0, 10 * i]], state]
        for i in range(streams)
        for res, size in (("1min", 60 * S), ("1h", 3600 * S))
    ])
    w.high_water = {(f"dev{i // 100}", f"p{i % 100}", "1s"): T0 for i in range(streams)}
    return w


def test_pieces_are_the_bytes_of_one_encode(tmp_path: Path) -> None:
    w = filled(40, samples=64)
    size = checkpoint.save_windows(tmp_path / "a.ckpt", w.high_water, w.persisted_windows(),
                                   {TP: 123})
    whole = msgspec.msgpack.encode(checkpoint.Checkpoint(
        marks=[(a, p, r, s) for (a, p, r), s in w.high_water.items()],
        windows=w.export_state(), positions=[("telemetry.clean", 0, 123)],
    ))
    assert (tmp_path / "a.ckpt").read_bytes() == whole and size == len(whole)
    back = checkpoint.load(tmp_path / "a.ckpt")
    assert len(back.windows) == 80 and back.position_map() == {TP: 123}
    # the restored list saves to the same bytes again (the restart path)
    checkpoint.save(tmp_path / "b.ckpt", back.high_water(), back.windows, back.position_map())
    assert (tmp_path / "b.ckpt").read_bytes() == whole


@pytest.mark.parametrize("count", [0, 15, 16, 65535, 65536])
def test_array_header_lengths(count: int) -> None:
    assert checkpoint._array_header(count) == msgspec.msgpack.encode([None] * count)[:-count or None]


async def _longest_stall(save) -> tuple[float, float]:
    """The event loop's longest stall while ``save`` runs in a worker thread, and
    how long the save took."""
    stalls: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await anyio.sleep(0.002)
            now = time.perf_counter()
            stalls.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0.05)
        t0 = time.perf_counter()
        await save()
        took = time.perf_counter() - t0
        done = True
    return max(stalls), took


@pytest.mark.anyio
async def test_a_large_checkpoint_does_not_stall_the_loop(tmp_path: Path) -> None:
    w = filled(2000)  # 4,000 windows of 2,048 values: a ~35 MB file
    path = tmp_path / "a.ckpt"

    async def as_before() -> None:  # states built on the loop, one encode in the thread
        await anyio.to_thread.run_sync(checkpoint.save, path, dict(w.high_water),
                                       w.export_state(), {TP: 1})

    async def now() -> None:  # as the actor does
        await anyio.to_thread.run_sync(checkpoint.save_windows, path, w.high_water,
                                       w.persisted_windows(), {TP: 1})

    before, _ = await _longest_stall(as_before)
    stall, took = await _longest_stall(now)
    assert path.stat().st_size > 30_000_000
    # the loop ran all along: its longest stall is a small part of the save, and
    # of the stall of building and encoding the whole state at once
    assert stall < before / 3, (stall, before, took)
    assert stall < took / 3, (stall, before, took)


@pytest.mark.anyio
async def test_an_hour_of_windows_closing_at_once_does_not_stall_the_loop(tmp_path: Path) -> None:
    lg = await open_log(tmp_path)
    try:
        codec = MsgpackCodec()
        agg = AggregatorActor("agg", AggregatorConfig(), lg, codec, tmp_path)
        agg.windows = w = filled(2000)
        for a in w._assets.values():  # the hour is over: every window closes
            w._close(a, T0 + 3600 * S)
        stall, took = await _longest_stall(agg.emit_and_commit)
        assert len(await read_all(lg, codec, "telemetry.1h")) == 2000
        assert len(await read_all(lg, codec, "telemetry.1min")) == 2000
        assert w.open_count == 0
        assert stall < took / 3, (stall, took)
    finally:
        await lg.close()
