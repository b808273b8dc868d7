"""Consumers of the embedded log (``EmbeddedLog.consumer``).

One consumer per group reads every partition of its topics (no rebalancing
between members in this backend); positions start at the group's committed
offsets, else at the oldest retained record; a position behind a partition's
start (retention deleted it) continues at the start. Each consumer has its own
SQLite connection, used in worker threads; ``fetch`` reads one snapshot and,
when nothing is there, waits for the change signal writers in any process
give after each commit (``changes``: inotify, on Linux), else for an
in-process append; it looks again every ``POLL_S`` in any case.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import anyio

from otgate.actors.log import changes
from otgate.actors.log.base import LogRecord, TopicPartition
from otgate.actors.log.embedded import (
    _BATCHES_FROM,
    POLL_S,
    UnknownTopic,
    connect,
    take,
    unpack_batches,
)

T = TypeVar("T")

if TYPE_CHECKING:
    from otgate.actors.log.embedded import EmbeddedLog


class EmbeddedConsumer:
    """A consumer of the embedded log (see ``EmbeddedLog`` for group semantics)."""

    def __init__(self, log: EmbeddedLog, group: str, topics: list[str]) -> None:
        self._log = log
        self.group = group
        self.topics = topics
        self._con: sqlite3.Connection | None = None
        self._pos: dict[TopicPartition, int] | None = None
        self._tids: dict[str, int] = {}
        self._seeks: dict[TopicPartition, int] = {}
        self._rr = 0
        self._rest: dict[TopicPartition, tuple[int, int, list]] = {}  # see _from_rest
        self._watch: int | None = -1  # inotify fd; -1 = not opened yet, None = none

    def _conn(self) -> sqlite3.Connection:
        if self._con is None:
            self._con = connect(self._log.path, self._log.busy_timeout_s)
        return self._con

    def _assign(self, con: sqlite3.Connection) -> None:
        pos: dict[TopicPartition, int] = {}
        for name in self.topics:
            row = con.execute("SELECT tid FROM topics WHERE name=?", (name,)).fetchone()
            if row is None:
                raise UnknownTopic(name)
            tid = row[0]
            self._tids[name] = tid
            rows = con.execute(
                "SELECT p.partition, COALESCE(g.offset, p.start_offset) FROM partitions p"
                " LEFT JOIN group_offsets g ON g.grp=? AND g.tid=p.tid AND"
                " g.partition=p.partition WHERE p.tid=? ORDER BY p.partition",
                (self.group, tid),
            ).fetchall()
            for p, off in rows:
                pos[(name, p)] = off
        pos.update(self._seeks)
        self._seeks.clear()
        self._pos = pos

    def _fetch(self, max_records: int) -> list[LogRecord]:
        con = self._conn()
        if self._pos is None:
            self._assign(con)
        assert self._pos is not None
        if self._seeks:
            self._pos.update(self._seeks)
            self._seeks.clear()
        tps = list(self._pos)
        out: list[LogRecord] = []
        con.execute("BEGIN")  # one snapshot for all partitions
        try:
            for i in range(len(tps)):
                if len(out) >= max_records:
                    break
                tp = tps[(self._rr + i) % len(tps)]
                tid = self._tids[tp[0]]
                pos = self._pos[tp]
                room = max_records - len(out)
                got = self._from_rest(con, tp, tid, pos, room)
                if got:
                    pos = got[-1].offset + 1
                if len(got) < room:
                    rest: list[tuple[int, int, list]] = []
                    cur = con.execute(_BATCHES_FROM, (tid, tp[1], tid, tp[1], pos))
                    try:
                        got += unpack_batches(tp[0], tp[1], cur, pos, room - len(got), rest)
                    finally:
                        cur.close()
                    if rest:
                        self._rest[tp] = rest[0]
                if got:
                    out += got
                    self._pos[tp] = got[-1].offset + 1
        finally:
            con.execute("COMMIT")
        self._rr += 1
        return out

    def _from_rest(self, con: sqlite3.Connection, tp: TopicPartition, tid: int, pos: int,
                   room: int) -> list[LogRecord]:
        """Records at ``pos`` from the batch the last fetch left partly unread (a fetch
        smaller than the stored batches reads and unpacks each batch once), unless
        retention deleted that batch meanwhile."""
        rest = self._rest.pop(tp, None)
        if rest is None or not rest[0] <= pos < rest[0] + len(rest[2]):
            return []
        (start,) = con.execute("SELECT start_offset FROM partitions WHERE tid=? AND partition=?",
                               (tid, tp[1])).fetchone()
        if rest[0] < start:
            return []
        got = take(tp[0], tp[1], *rest, pos, room)
        if got and got[-1].offset + 1 < rest[0] + len(rest[2]):
            self._rest[tp] = rest
        return got

    async def fetch(self, max_records: int = 1000, timeout: float = 1.0) -> list[LogRecord]:
        """Next records after the position; [] when none came within ``timeout``."""
        deadline = anyio.current_time() + timeout
        if timeout <= 0:  # one look, never a wait: no inotify watch (the kernel would
            # queue an event on it for every commit of every process, never read)
            return await anyio.to_thread.run_sync(self._fetch, max_records)
        if self._watch == -1:
            self._watch = changes.watch(self._log.changed_path)
        while True:
            new_data = self._log._new_data
            if self._watch is not None:
                changes.drain(self._watch)  # before the look: a later commit wakes us
            recs = await anyio.to_thread.run_sync(self._fetch, max_records)
            left = deadline - anyio.current_time()
            if recs or left <= 0:
                return recs
            with anyio.move_on_after(min(POLL_S, left)):
                if self._watch is not None:
                    await anyio.wait_readable(self._watch)
                else:
                    await new_data.wait()

    async def fetch_then(
        self, max_records: int, then: Callable[[list[LogRecord]], T]
    ) -> tuple[list[LogRecord], T]:
        """One look (``fetch`` with ``timeout=0``) and ``then(records)``, both in the same
        worker thread: a caller with blocking work to do on what it fetched (a
        write runner's fsync'd ledger entry) pays one thread hop, not two."""
        def run() -> tuple[list[LogRecord], T]:
            recs = self._fetch(max_records)
            return recs, then(recs)

        return await anyio.to_thread.run_sync(run)

    def position(self) -> dict[TopicPartition, int]:
        return dict(self._pos or {})

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Durably store ``next offset to read`` per partition for this group."""

        def run() -> None:
            con = self._conn()
            if self._pos is None:
                self._assign(con)
            with self._log.gate.hold():
                con.execute("BEGIN IMMEDIATE")
                try:
                    con.executemany(
                        "INSERT INTO group_offsets(grp, tid, partition, offset) VALUES (?,?,?,?)"
                        " ON CONFLICT(grp, tid, partition) DO UPDATE SET offset=excluded.offset",
                        [(self.group, self._tids[t], p, o) for (t, p), o in offsets.items()],
                    )
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise

        await anyio.to_thread.run_sync(run)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._seeks[(topic, partition)] = offset

    async def close(self) -> None:
        if self._watch not in (None, -1):
            fd, self._watch = self._watch, None
            os.close(fd)
        if self._con is not None:
            con, self._con = self._con, None
            await anyio.to_thread.run_sync(con.close)
