"""Tumbling event-time windows (1 s, 1 min, 1 h) with a watermark, as pure code.

A reading lands in one window per resolution, chosen by its device_time:
``[floor(t / size) * size, + size)``. Each asset has a watermark, the largest
device_time seen for it; a window closes when ``watermark - lateness >= end``
(so readings up to ``lateness`` late still count), or when its asset has been
silent for ``idle_timeout_s`` (processing time) and the wall clock is past
``end + lateness`` (an asset that stopped sending still gets its last windows).

A reading whose window already closed (or was already emitted, see
``high_water``) is *late*: it is counted per resolution and not aggregated;
it stays in ``telemetry.clean``, so nothing is lost.

Restart safety, together with the actor (see ``actor.py``):
* ``commit_offsets`` never commits past the first record of an open window
  that is not persisted, nor (with persisted resolutions) past the
  positions of the last checkpoint, so after a restart the log replays every
  record that is not in a restored window.
* a persisted window (``persisted`` resolutions) records per partition the
  last offset it included (``through``); a replayed record at or below it is
  skipped for that window, so restored windows count each record once.
* ``high_water[(asset, parameter, resolution)]`` is the start of the last
  window emitted for that stream. Windows per stream close in start order, so
  a rebuilt window whose start is ``<= high_water`` was already emitted and is
  skipped (``deduplicated``), never emitted twice.
"""

from __future__ import annotations

import math
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otgate.actors.aggregator.stats import QUALITY_INDEX, WindowStats
from otgate.actors.records import Quality, Reading

RESOLUTIONS_NS: dict[str, int] = {
    "1s": 1_000_000_000,
    "1min": 60_000_000_000,
    "1h": 3_600_000_000_000,
}

_BAD = Quality.BAD  # a module constant: ``Quality.BAD`` is a slow class lookup on 3.11
_NOT_NUMERIC = (bool, str)

StreamKey = tuple[str, str, str]  # asset_id, parameter, resolution
TopicPartition = tuple[str, int]


@dataclass(slots=True)
class Window:
    """One open window of one stream."""

    asset_id: str
    parameter: str
    resolution: str
    start: int
    end: int
    stats: WindowStats
    unit: str = ""
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    through: dict[TopicPartition, int] | None = None  # persisted windows: last offset added
    holds: list[list] = field(default_factory=list)  # its [offset, done] entries in Windows._holds
    restored: bool = False  # from a checkpoint (import_state)

    @property
    def stream(self) -> StreamKey:
        return (self.asset_id, self.parameter, self.resolution)


@dataclass(slots=True)
class _Asset:
    watermark: int = -(1 << 62)
    last_arrival: float = 0.0
    next_close: int = 1 << 62  # smallest end among its open windows
    windows: dict[tuple[str, str, int], Window] = field(default_factory=dict)
    # parameter -> its newest open window per resolution (index as in Windows._sizes):
    # the common case, a reading for the current window, needs one lookup, not three
    current: dict[str, list[Window | None]] = field(default_factory=dict)


class Windows:
    """All open windows; ``add`` readings, then take ``closed()`` ones to emit."""

    def __init__(
        self,
        resolutions: list[str],
        *,
        lateness_ns: int,
        idle_timeout_s: float,
        max_samples: int = 4096,
        persisted: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        unknown = [r for r in resolutions if r not in RESOLUTIONS_NS]
        if unknown:
            raise ValueError(f"unknown resolutions {unknown}; known: {list(RESOLUTIONS_NS)}")
        self._sizes = [(r, RESOLUTIONS_NS[r]) for r in resolutions]
        self._indexed = [(i, r, size) for i, (r, size) in enumerate(self._sizes)]
        self._index = {r: i for i, (r, _) in enumerate(self._sizes)}
        self.lateness_ns = lateness_ns
        self.idle_timeout_s = idle_timeout_s
        self.max_samples = max_samples
        self.persisted = persisted
        self.checkpointed: dict[TopicPartition, int] | None = None
        self.replayed_into_restored = 0
        self._clock = clock
        self._wall_ns = wall_ns
        self._assets: dict[str, _Asset] = {}
        self._ready: list[Window] = []
        self.high_water: dict[StreamKey, int] = {}
        # per (resolution, partition): [first offset, done] of each window in offset order,
        # so commit_offsets finds the oldest open window without scanning them all
        self._holds: dict[tuple[str, TopicPartition], deque[list]] = {}
        self.late: dict[str, int] = {r: 0 for r in resolutions}
        self.deduplicated = 0
        self.already_emitted = 0
        self.emitted = 0

    @property
    def open_count(self) -> int:
        return sum(len(a.windows) for a in self._assets.values())

    def add(self, r: Reading, tp: TopicPartition, offset: int) -> None:
        """Aggregate one reading (its device_time must be set; the validator ensures it)."""
        t = r.device_time if r.device_time is not None else r.gateway_time
        a = self._assets.get(r.asset_id)
        if a is None:
            a = self._assets[r.asset_id] = _Asset()
        a.last_arrival = self._clock()
        frontier = a.watermark - self.lateness_ns
        quality = r.quality
        qi = QUALITY_INDEX[quality]
        value = r.value
        x: float | None = None
        if quality is not _BAD and value is not None and not isinstance(value, _NOT_NUMERIC):
            x = float(value)
            if not math.isfinite(x):
                x = None
        cur = a.current.get(r.parameter)
        if cur is None:
            cur = a.current[r.parameter] = [None] * len(self._sizes)
        for i, res, size in self._indexed:
            w = cur[i]
            if w is None or t < w.start or t >= w.end:
                w = self._window(a, r, i, res, size, t, frontier, cur)
                if w is None:
                    continue
            through = w.through
            if through is not None:
                # only a restored window can see an offset again (a replay after the restart)
                if w.restored and offset <= through.get(tp, -1):
                    self.replayed_into_restored += 1  # already in the restored state
                    continue
                through[tp] = offset
            if tp not in w.first_offsets:
                self._hold(w, tp, offset)
            # WindowStats.add_fast inlined (the hot loop: three windows per reading)
            st = w.stats
            st.count += 1
            if st.first is None:
                st.first = value
            st.last = value
            st.quality_counts[qi] += 1
            if x is not None:
                samples = st._samples
                if st._running or len(samples) >= st.max_samples:
                    st.add_number(x)
                else:
                    samples.append(x)
        if t > a.watermark:
            a.watermark = t
            if a.watermark - self.lateness_ns >= a.next_close:
                self._close(a, a.watermark - self.lateness_ns)

    def _window(
        self, a: _Asset, r: Reading, i: int, res: str, size: int, t: int, frontier: int,
        cur: list[Window | None],
    ) -> Window | None:
        """The open window of ``r`` at one resolution, created when new; None when
        the reading is late or its window was already emitted (both counted)."""
        start = t - t % size
        end = start + size
        wkey = (r.parameter, res, start)
        w = a.windows.get(wkey)
        if w is None:
            if end <= frontier:
                self.late[res] += 1
                return None
            hw = self.high_water.get((r.asset_id, r.parameter, res))
            if hw is not None and start <= hw:
                self.already_emitted += 1  # replay after a restart, or very late
                return None
            seed = zlib.crc32(f"{r.asset_id}|{r.parameter}|{res}|{start}".encode())
            w = a.windows[wkey] = Window(
                r.asset_id, r.parameter, res, start, end,
                WindowStats(self.max_samples, seed), r.unit,
                through={} if res in self.persisted else None,
            )
            if end < a.next_close:
                a.next_close = end
        c = cur[i]
        if c is None or w.start >= c.start:
            cur[i] = w
        return w

    def _hold(self, w: Window, tp: TopicPartition, offset: int) -> None:
        w.first_offsets[tp] = offset
        h = [offset, False]
        w.holds.append(h)
        q = self._holds.get((w.resolution, tp))
        if q is None:
            q = self._holds[(w.resolution, tp)] = deque()
        if q and q[-1][0] > offset:  # out of order (restored windows): keep it sorted
            i = len(q)
            while i and q[i - 1][0] > offset:
                i -= 1
            q.insert(i, h)
        else:
            q.append(h)

    def _close(self, a: _Asset, frontier: int) -> None:
        keep: dict[tuple[str, str, int], Window] = {}
        nxt = 1 << 62
        for k, w in a.windows.items():
            if w.end <= frontier:
                self._ready.append(w)
                cur = a.current.get(w.parameter)
                if cur is not None:
                    i = self._index[w.resolution]
                    if cur[i] is w:
                        cur[i] = None  # closed: never added to again
            else:
                keep[k] = w
                if w.end < nxt:
                    nxt = w.end
        a.windows = keep
        a.next_close = nxt

    def close_idle(self) -> None:
        """Close the windows of assets silent for idle_timeout_s whose time has passed."""
        now = self._clock()
        frontier = self._wall_ns() - self.lateness_ns
        for a in self._assets.values():
            if a.windows and now - a.last_arrival >= self.idle_timeout_s:
                if frontier >= a.next_close:
                    self._close(a, frontier)

    def closed(self) -> list[Window]:
        """Take the closed windows not emitted before, oldest start first per stream.

        Updates ``high_water``; the caller must emit what it gets (or fail and
        restart, which rebuilds them from the log).
        """
        ready, self._ready = self._ready, []
        ready.sort(key=lambda w: w.start)
        out = []
        for w in ready:
            for h in w.holds:
                h[1] = True  # emitted (or already emitted before): holds nothing back
            key = w.stream
            hw = self.high_water.get(key)
            if hw is not None and w.start <= hw:
                self.deduplicated += 1
                continue
            self.high_water[key] = w.start
            out.append(w)
        self.emitted += len(out)
        return out

    def commit_offsets(self, positions: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Offsets safe to commit (see the module doc).

        The position, held back to the first record of every open (or closed
        but not yet emitted) window that is not persisted; with persisted
        resolutions, also held back to the positions of the last checkpoint
        (records after it are not in the saved state yet) — before the first
        checkpoint, to the persisted windows' first records.
        """
        out = dict(positions)
        ckpt = self.checkpointed
        for (res, tp), q in self._holds.items():
            while q and q[0][1]:
                q.popleft()
            if not q or tp not in out or q[0][0] >= out[tp]:
                continue
            if res in self.persisted and ckpt is not None and tp in ckpt:
                continue  # in the saved state: the checkpoint positions hold instead
            out[tp] = q[0][0]
        if ckpt is not None and self.persisted:
            for tp, off in ckpt.items():
                if tp in out and off < out[tp]:
                    out[tp] = off
        return out

    # -- persisted state ------------------------------------------------------
    def persisted_windows(self) -> list[Window]:
        """The open persisted windows (what a checkpoint saves)."""
        return [
            w for a in self._assets.values() for w in a.windows.values() if w.through is not None
        ]

    def export_state(self) -> list[list[Any]]:
        """The open persisted windows with their statistics (msgpack-able)."""
        return [window_state(w) for w in self.persisted_windows()]

    def import_state(self, windows: list[list[Any]]) -> int:
        """Restore ``export_state`` output, skipping windows already emitted.

        Call after ``high_water`` is complete. Watermarks are not restored:
        they rebuild from the replayed records, so replayed records of
        windows that closed before the restart count as already emitted,
        not as late.
        """
        n = 0
        for asset_id, param, res, start, end, unit, firsts, through, st in windows:
            if res not in self.persisted:
                continue
            hw = self.high_water.get((asset_id, param, res))
            if hw is not None and start <= hw:
                continue
            a = self._assets.get(asset_id)
            if a is None:
                a = self._assets[asset_id] = _Asset()
            a.last_arrival = self._clock()
            w = a.windows[(param, res, start)] = Window(
                asset_id, param, res, start, end,
                WindowStats.from_state(st, self.max_samples), unit,
                through={(t, p): o for t, p, o in through}, restored=True,
            )
            for t, p, o in firsts:
                self._hold(w, (t, p), o)
            a.next_close = min(a.next_close, end)
            n += 1
        return n


def window_state(w: Window) -> list[Any]:
    """One persisted window with its statistics, as ``Windows.import_state`` takes it."""
    assert w.through is not None
    return [
        w.asset_id, w.parameter, w.resolution, w.start, w.end, w.unit,
        [[t, p, o] for (t, p), o in w.first_offsets.items()],
        [[t, p, o] for (t, p), o in w.through.items()],
        w.stats.state(),
    ]
