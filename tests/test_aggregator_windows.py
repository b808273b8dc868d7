"""Window edge cases and statistics (pure Windows / WindowStats)."""

from __future__ import annotations

import array
import math
import statistics

import pytest

from otgate.actors.aggregator.actor import to_aggregate
from otgate.actors.aggregator.stats import WindowStats
from otgate.actors.aggregator.windows import Windows
from otgate.actors.records import Quality, Reading

S = 1_000_000_000
T0 = 1_700_000_000 * S  # a whole hour
TP = ("telemetry.clean", 0)


def rd(t: float, value=1.0, *, asset="a", parameter="p", quality=Quality.GOOD) -> Reading:
    dt = T0 + round(t * S)
    return Reading(asset_id=asset, parameter=parameter, value=value, quality=quality,
                   device_time=dt, gateway_time=dt)


class Clock:
    def __init__(self) -> None:
        self.mono = 0.0
        self.wall = T0

    def __call__(self) -> float:
        return self.mono

    def wall_ns(self) -> int:
        return self.wall


def make(res=("1s",), lateness=0.5, idle=10.0, clock: Clock | None = None) -> Windows:
    clock = clock or Clock()
    return Windows(list(res), lateness_ns=int(lateness * S), idle_timeout_s=idle,
                   clock=clock, wall_ns=clock.wall_ns)


def test_window_closes_when_watermark_passes_end_plus_lateness():
    w = make()
    w.add(rd(0.1, 1), TP, 0)
    w.add(rd(0.9, 3), TP, 1)
    w.add(rd(1.4, 5), TP, 2)  # watermark 1.4 - 0.5 < 1.0: still open
    assert w.closed() == []
    w.add(rd(1.5, 7), TP, 3)  # 1.5 - 0.5 >= 1.0: [0, 1) closes
    (win,) = w.closed()
    assert (win.start, win.end) == (T0, T0 + S)
    assert win.stats.count == 2 and win.stats.mean == 2.0


def test_late_within_lateness_counts_and_after_close_is_late():
    w = make()
    w.add(rd(0.5, 1), TP, 0)
    w.add(rd(1.2, 1), TP, 1)
    w.add(rd(0.8, 3), TP, 2)  # late but within 0.5 s: counted in [0, 1)
    w.add(rd(1.6, 1), TP, 3)  # closes [0, 1)
    (win,) = w.closed()
    assert win.stats.count == 2 and win.stats.max == 3
    w.add(rd(0.9, 100), TP, 4)  # its window closed: late, not aggregated
    assert w.late["1s"] == 1
    assert w.closed() == []


def test_windows_emitted_once_and_in_start_order():
    w = make()
    for i in range(30):
        w.add(rd(i * 0.1), TP, i)
    w.add(rd(10.0), TP, 30)
    starts = [x.start for x in w.closed()]
    assert starts == [T0, T0 + S, T0 + 2 * S]
    assert w.closed() == []
    assert w.high_water[("a", "p", "1s")] == T0 + 2 * S


def test_high_water_dedupes_rebuilt_window():
    w = make()
    w.high_water[("a", "p", "1s")] = T0 + S  # [0,1) and [1,2) were emitted before a restart
    for i, t in enumerate((0.5, 1.5, 2.5, 3.6)):
        w.add(rd(t), TP, i)
    assert [x.start for x in w.closed()] == [T0 + 2 * S]
    assert w.already_emitted == 2


def test_commit_offsets_held_back_to_oldest_open_window():
    w = make(res=("1s", "1min"))
    w.add(rd(0.1), TP, 10)
    w.add(rd(1.7), TP, 11)  # [0,1) closes; the 1min window from offset 10 is still open
    assert len(w.closed()) == 1
    assert w.commit_offsets({TP: 12}) == {TP: 10}
    w2 = make()
    w2.add(rd(0.1), TP, 10)
    w2.add(rd(1.7), TP, 11)
    w2.closed()
    assert w2.commit_offsets({TP: 12}) == {TP: 11}  # [1,2) is open since offset 11


def test_idle_asset_windows_close_on_wall_clock():
    clock = Clock()
    w = make(idle=5.0, clock=clock)
    w.add(rd(0.2), TP, 0)
    clock.mono += 4.0
    clock.wall = T0 + 10 * S
    w.close_idle()
    assert w.closed() == []  # not idle long enough
    clock.mono += 1.0
    w.close_idle()
    assert [x.start for x in w.closed()] == [T0]


def test_assets_have_their_own_watermark():
    w = make()
    w.add(rd(0.2, asset="a"), TP, 0)
    w.add(rd(50.0, asset="b"), TP, 1)  # b's clock far ahead must not close a's window
    assert [x.asset_id for x in w.closed()] == []
    w.add(rd(0.4, asset="a"), TP, 2)
    assert w.late["1s"] == 0


def test_stats_match_reference():
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0]
    st = WindowStats()
    for v in values:
        st.add(v, Quality.GOOD)
    st.add(1000.0, Quality.BAD)  # counted, not in the numbers
    st.add("on", Quality.GOOD)
    assert st.count == 12 and st.n == 10
    assert st.mean == pytest.approx(statistics.fmean(values))
    assert st.stddev == pytest.approx(statistics.pstdev(values))
    p50, p95, p99 = st.percentiles()
    qs = statistics.quantiles(values, n=100, method="inclusive")
    assert p50 == pytest.approx(statistics.median(values))
    assert p95 == pytest.approx(qs[94]) and p99 == pytest.approx(qs[98])
    assert st.quality_counts == [11, 0, 0, 1] and st.worst_quality is Quality.BAD
    assert (st.min, st.max, st.sum) == (1.0, 9.0, sum(values))


def test_reservoir_is_deterministic_per_window():
    def run() -> list:
        st = WindowStats(max_samples=16, seed=42)
        for i in range(1000):
            st.add(float(i), Quality.GOOD)
        return st.percentiles()

    first = run()
    assert first == run()
    assert 300 < first[0] < 700  # a sample of 0..999, not the first 16


def test_to_aggregate_fields():
    w = make()
    w.add(rd(0.1, 2.0), TP, 0)
    w.add(rd(0.2, 4.0, quality=Quality.SUSPECT), TP, 1)
    w.add(rd(1.9), TP, 2)
    (win,) = w.closed()
    agg = to_aggregate(win, 123)
    assert (agg.asset_id, agg.parameter, agg.window) == ("a", "p", "1s")
    assert (agg.window_start, agg.window_end, agg.count) == (T0, T0 + S, 2)
    assert (agg.min, agg.max, agg.mean) == (2.0, 4.0, 3.0)
    assert agg.quality is Quality.SUSPECT
    assert (agg.stddev, agg.p50) == (pytest.approx(1.0), pytest.approx(3.0))
    assert (agg.numeric_count, agg.count_good, agg.count_suspect, agg.count_bad) == (2, 1, 1, 0)


def test_persisted_window_state_roundtrip_skips_replayed_records():
    w = make(res=("1s", "1min"))
    w.persisted = frozenset({"1min"})
    for i in range(25):  # 0.0 .. 2.4 s
        w.add(rd(i * 0.1, float(i)), TP, i)
    w.closed()
    w.checkpointed = {TP: 25}
    # committed: held by the open 1 s window [1,2) (offset 10), not by the minute window
    assert w.commit_offsets({TP: 25}) == {TP: 10}
    state = w.export_state()
    assert len(state) == 1
    w2 = make(res=("1s", "1min"))
    w2.persisted = frozenset({"1min"})
    w2.high_water = dict(w.high_water)
    assert w2.import_state(state) == 1
    for i in range(10, 30):  # replay from the commit, then 5 new records
        w2.add(rd(i * 0.1, float(i)), TP, i)
    assert w2.replayed_into_restored == 15 and w2.already_emitted == 0
    w2.add(rd(41.0, 0.0), TP, 30)  # closes the minute [T0 - 20 s, T0 + 40 s)
    closed = w2.closed()
    (minute,) = [x for x in closed if x.resolution == "1min"]
    assert minute.stats.count == 30 and minute.stats.sum == sum(range(30))
    ones = [(x.start, x.stats.count) for x in closed if x.resolution == "1s"]
    assert ones == [(T0 + S, 10), (T0 + 2 * S, 10)]  # rebuilt complete by the replay


def test_persisted_window_held_back_until_first_checkpoint():
    w = make(res=("1min",))
    w.persisted = frozenset({"1min"})
    w.add(rd(0.1), TP, 7)
    assert w.commit_offsets({TP: 8}) == {TP: 7}  # no checkpoint yet
    w.checkpointed = {TP: 8}
    assert w.commit_offsets({TP: 8}) == {TP: 8}
    other = ("telemetry.clean", 1)  # a partition the checkpoint did not know
    w.add(rd(0.2), other, 3)
    assert w.commit_offsets({TP: 8, other: 4}) == {TP: 8, other: 3}


def test_stats_state_roundtrip_continues_the_reservoir_identically():
    a = WindowStats(max_samples=16, seed=7)
    for i in range(100):
        a.add(float(i), Quality.GOOD)
    b = WindowStats.from_state(a.state(), 16)
    for st in (a, b):
        for i in range(100, 300):
            st.add(float(i), Quality.SUSPECT)
    assert a.percentiles() == b.percentiles()
    assert (a.count, a.n, a.mean, a.stddev, a.quality_counts) == (
        b.count, b.n, b.mean, b.stddev, b.quality_counts)


def test_running_numbers_past_max_samples_are_exact_and_stable():
    # a large offset with a small spread: the naive sum-of-squares formula fails here
    values = [1e9 + (i % 97) * 1e-3 for i in range(5000)]
    st = WindowStats(max_samples=64, seed=3)
    for v in values:
        st.add(v, Quality.GOOD)
    assert st.n == 5000 and st.count == 5000
    assert st.mean == pytest.approx(statistics.fmean(values), rel=1e-15)
    # values 1e9 apart from their spread: ~1e-7 relative here (Welford: ~1.4e-6)
    assert st.stddev == pytest.approx(statistics.pstdev(values), rel=5e-7)
    assert (st.min, st.max) == (min(values), max(values))
    assert st.sum == pytest.approx(math.fsum(values), rel=1e-13)
    kept = st._samples
    assert len(kept) == 64 and len(set(kept)) > 1


def test_reservoir_is_a_uniform_sample():
    st = WindowStats(max_samples=1000, seed=11)
    for i in range(100_000):
        st.add(float(i), Quality.GOOD)
    kept = st._samples
    assert len(set(kept)) == 1000
    assert 45_000 < statistics.fmean(kept) < 55_000
    assert sum(1 for x in kept if x >= 50_000) == pytest.approx(500, abs=80)


def test_state_of_an_older_version_continues():
    a = WindowStats(max_samples=16, seed=5)
    for i in range(100):
        a.add(float(i), Quality.GOOD)
    old = a.state()[:13]  # what an older gateway saved: no buffer, no skip state
    b = WindowStats.from_state(old, 16)
    for i in range(100, 200):
        b.add(float(i), Quality.GOOD)
    assert b.n == 200 and b.mean == pytest.approx(99.5)
    assert b.stddev == pytest.approx(statistics.pstdev(range(200)))


def test_state_with_generator_words_as_ints_continues_identically():
    # checkpoints before the words were saved as bytes hold a list of 625 ints
    a = WindowStats(max_samples=16, seed=9)
    for i in range(100):
        a.add(float(i), Quality.GOOD)
    state = a.state()
    assert isinstance(state[12][1], bytes) and len(state[12][1]) == 625 * 4
    old = [*state[:12], [state[12][0], list(array.array("I", state[12][1])), state[12][2]],
           *state[13:]]
    b = WindowStats.from_state(old, 16)
    for st in (a, b):
        for i in range(100, 300):
            st.add(float(i), Quality.GOOD)
    assert a.percentiles() == b.percentiles() and a.stddev == b.stddev


def _footprint(w: Windows) -> tuple[int, ...]:
    """Sizes of every container Windows keeps between readings."""
    assets = w._assets.values()
    return (
        len(w._assets), w.open_count, len(w.high_water), len(w._ready), len(w._holds),
        sum(len(q) for q in w._holds.values()),
        sum(len(x.current) for x in assets),
        sum(len(win.holds) + len(win.first_offsets) + len(win.through or ())
            for x in assets for win in x.windows.values()),
    )


def test_structures_stay_bounded_over_hours_of_device_time():
    w = Windows(["1s", "1min", "1h"], lateness_ns=2 * S, idle_timeout_s=10, max_samples=16,
                persisted=frozenset({"1min", "1h"}))
    tps = [("telemetry.clean", 0), ("telemetry.clean", 1)]
    off = 0
    sizes = {}
    for k in range(3 * 3600 * 2):  # 3 h at 2 Hz for 3 streams on 2 partitions
        t = k * 0.5
        for j, (asset, param) in enumerate([("a", "p"), ("a", "q"), ("b", "p")]):
            w.add(rd(t, float(k % 50), asset=asset, parameter=param), tps[j % 2], off)
            off += 1
        if k % 20 == 0:  # every 10 s: emit, commit, checkpoint
            w.closed()
            w.commit_offsets({tp: off for tp in tps})
            w.checkpointed = {tp: off for tp in tps}
        if k % 7200 == 3600:  # half past each hour: the same moment of the hour
            sizes[k // 7200] = _footprint(w)
    assert sizes[1] == sizes[2]  # from the second hour on (the 1 h marks exist then)
    assert w.emitted > 3 * 3 * 3600  # the windows did close and leave
