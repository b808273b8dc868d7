"""The embedded log backend: a durable log in one SQLite file.

Storage: like Kafka's segments, one row per appended batch and partition
(``batches``: base/last offset, time, msgpack list of (key, value)); a batch
larger than ``MAX_BATCH_BYTES`` is split over several rows. Consumers unpack
rows and skip to their exact offset, so offsets stay per record.

Durability: WAL journal, ``synchronous=FULL``; ``append`` returns after its
transaction committed (the WAL fsync'd). ``append(..., sync=False)`` (derived
records a stage can write again from its durable input) commits without the
fsync (``synchronous=NORMAL`` for that transaction): a kill -9 loses nothing
(the frames are in the kernel's page cache), a power cut may lose a suffix of
such transactions, never anything before a synced commit. The WAL is one
sequential file of checksum-chained frames that recovery reads only up to the
first bad frame, so the fsync of any later synced commit (any process: the
input-offset commit of the stage that wrote them, a device's append) or
``sync()`` makes every earlier transaction durable as well.

Several OS processes (bulkheads) may append to the same file: every write
transaction is ``BEGIN IMMEDIATE`` (the file's write lock) and reads each
partition's next offset inside it, so offsets are dense and unique across
processes (after a power cut took back unsynced records, the next ones get
their offsets again). Writers queue for their turn on the
log's write gate (``write_gate``: a kernel file lock, woken the moment the
holder commits) rather than in SQLite's sleeping busy handler; ``busy_timeout``
stays behind it for writers outside the gate. A writer killed mid-transaction
leaves no trace (SQLite rolls the uncommitted WAL frames back), so there is
never a torn record. Readers see committed data only, while writers write and after
they died.

Threads: every SQLite call runs in a worker thread (``anyio.to_thread``), never
on the event loop; one connection per backend for writes (used by one thread at
a time, guarded by a lock) and one per consumer for reads.

Batching (group commit): appends that arrive while a transaction is running,
or while this process waits for its turn on the write gate, are written
together in the next one (the batch is taken once the gate is held), so many
small ``publish`` calls share one fsync, and the more the gate is contended
the fewer transactions a process asks it for. A transaction is synced when
any append in it asks for it. Cancellation: a cancelled ``append`` may still
be written (its records may already be in the running transaction); it is
never half-written.

Consumer groups: one consumer per group reads every partition of its topics
(no rebalancing between group members in this backend); positions start at the
group's committed offsets, else at the oldest retained record.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from otgate.actors.log import changes
from otgate.actors.log.base import LogRecord, TopicSpec
from otgate.actors.log.partition import partition_for
from otgate.actors.log.write_gate import gate_for

if TYPE_CHECKING:
    from otgate.actors.log.embedded_consumer import EmbeddedConsumer

SCHEMA = """
CREATE TABLE IF NOT EXISTS topics(
    tid INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, partitions INTEGER NOT NULL,
    retention_s REAL, retention_bytes INTEGER, priority INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS partitions(
    tid INTEGER NOT NULL, partition INTEGER NOT NULL,
    start_offset INTEGER NOT NULL DEFAULT 0, next_offset INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(tid, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches(
    tid INTEGER NOT NULL, partition INTEGER NOT NULL, base_offset INTEGER NOT NULL,
    last_offset INTEGER NOT NULL, ts INTEGER NOT NULL, bytes INTEGER NOT NULL,
    payload BLOB NOT NULL, PRIMARY KEY(tid, partition, base_offset)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets(
    grp TEXT NOT NULL, tid INTEGER NOT NULL, partition INTEGER NOT NULL,
    offset INTEGER NOT NULL, PRIMARY KEY(grp, tid, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schemas(
    id INTEGER PRIMARY KEY AUTOINCREMENT, subject TEXT NOT NULL, version INTEGER NOT NULL,
    schema TEXT NOT NULL, UNIQUE(subject, schema));
"""

MAX_BATCH_BYTES = 1024 * 1024
"""A larger append is stored as several batch rows."""

_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder(list[tuple[bytes | None, bytes]]).decode

# First batch holding ``offset`` or after it, then the following ones. Callers
# step the cursor and stop once they have enough records: SQLite copies a row's
# payload only when the row is stepped to, so a LIMIT sized in rows would copy
# whole batches (up to MAX_BATCH_BYTES each) that are then thrown away.
_BATCHES_FROM = (
    "SELECT base_offset, ts, payload FROM batches WHERE tid=? AND partition=? AND base_offset >="
    " (SELECT COALESCE(MAX(base_offset), 0) FROM batches WHERE tid=? AND partition=?"
    " AND base_offset <= ?) ORDER BY base_offset"
)


def unpack_batches(
    topic: str, partition: int, rows: Iterable[tuple], offset: int, limit: int,
    rest: list[tuple[int, int, list]] | None = None,
) -> list[LogRecord]:
    """Records at or after ``offset`` from batch rows (base_offset, ts, payload);
    ``rows`` is stepped only until ``limit`` records are taken. With ``rest``, a
    batch left partly unread is put in it as ``(base, ts, unpacked records)``, so
    the next fetch can go on from it without reading and unpacking it again."""
    out: list[LogRecord] = []
    if limit <= 0:
        return out
    for base, ts, payload in rows:
        recs = _unpack(payload)
        out += take(topic, partition, base, ts, recs, offset, limit - len(out))
        if len(out) >= limit:
            if rest is not None and out and out[-1].offset + 1 < base + len(recs):
                rest.append((base, ts, recs))
            break
    return out


def take(topic: str, partition: int, base: int, ts: int, recs: list, offset: int,
         room: int) -> list[LogRecord]:
    """Up to ``room`` records at or after ``offset`` of one unpacked batch."""
    skip = max(0, offset - base)
    stop = min(len(recs), skip + room)
    if skip >= stop:
        return []
    return [
        LogRecord(topic=topic, partition=partition, offset=o, key=kv[0], value=kv[1],
                  timestamp_ns=ts)
        for o, kv in zip(range(base + skip, base + stop), recs[skip:stop], strict=True)
    ]


POLL_S = 0.05
"""How often an idle consumer looks for records other processes wrote when it
has no change signal (``changes.watch``: inotify); with one, this is only the
safety net behind it."""


class UnknownTopic(KeyError):
    """Append or consume on a topic that ``ensure_topics`` never created."""


def is_retriable(exc: BaseException) -> bool:
    """Errors where retrying the append later can help: another process held
    the write lock past ``busy_timeout``, or the disk was full (retention and
    the block tier free space). Everything else (corrupt file, unknown topic)
    is permanent."""
    if isinstance(exc, sqlite3.OperationalError):
        msg = str(exc).lower()
        return "locked" in msg or "busy" in msg or "disk is full" in msg
    return False


def connect(path: Path, busy_timeout_s: float, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the log's pragmas (WAL, synchronous=FULL, busy timeout)."""
    if readonly:
        con = sqlite3.connect(
            f"file:{path}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=busy_timeout_s,
        )
    else:
        con = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
        )
    con.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    if not readonly:
        # only takes effect on a new file; lets retention give space back
        con.execute("PRAGMA auto_vacuum=INCREMENTAL")
        con.execute("PRAGMA journal_mode=WAL")
        # the WAL is reused from its start after each checkpoint; this cuts a file
        # that a burst grew back to 64 MiB (retention no longer truncates it)
        con.execute("PRAGMA journal_size_limit=67108864")
    con.execute("PRAGMA synchronous=FULL")
    return con


def _payloads(recs: list[tuple[bytes | None, bytes]]) -> list[tuple[int, bytes]]:
    """msgpack payloads ``(record count, bytes)`` of at most ~MAX_BATCH_BYTES each
    (split in halves only when one payload would be larger)."""
    payload = _pack(recs)
    if len(payload) <= MAX_BATCH_BYTES or len(recs) == 1:
        return [(len(recs), payload)]
    half = len(recs) // 2
    return _payloads(recs[:half]) + _payloads(recs[half:])


class _Pending:
    __slots__ = ("error", "records", "sync", "topic", "written")

    def __init__(self, topic: str, records: Sequence[tuple[bytes | None, bytes]],
                 sync: bool) -> None:
        self.topic = topic
        self.records = records
        self.sync = sync
        self.written = False
        self.error: BaseException | None = None


class EmbeddedLog:
    """``LogBackend`` on SQLite (see the module docstring for the semantics)."""

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_s: float = 30.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = Path(path)
        self.changed_path = changes.signal_path(self.path)
        self.gate = gate_for(self.path)
        self.clock = clock  # record timestamps (ns); tests age records with it
        self.busy_timeout_s = busy_timeout_s
        self._con: sqlite3.Connection | None = None
        self._lock = anyio.Lock()
        self._pending: list[_Pending] = []  # taken by the writer thread once it holds the gate
        self._pending_mutex = threading.Lock()
        self._topics: dict[str, tuple[int, int]] = {}  # name -> (tid, partitions)
        self._new_data = anyio.Event()
        self._unblocked = anyio.Event()
        self._unblocked.set()
        self.appended = 0
        self.transactions = 0

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = await anyio.to_thread.run_sync(self._open)

    def _open(self) -> sqlite3.Connection:
        con = connect(self.path, self.busy_timeout_s)
        with self.gate.hold():
            con.executescript(SCHEMA)  # idempotent; safe when processes race
        self._load_topics(con)
        changes.touch(self.changed_path)
        return con

    async def close(self) -> None:
        if self._con is not None:
            async with self._lock:
                con, self._con = self._con, None
                await anyio.to_thread.run_sync(con.close)

    def _load_topics(self, con: sqlite3.Connection) -> None:
        rows = con.execute("SELECT name, tid, partitions FROM topics").fetchall()
        self._topics = {name: (tid, parts) for name, tid, parts in rows}

    def _db(self) -> sqlite3.Connection:
        if self._con is None:
            raise RuntimeError("EmbeddedLog used before start() or after close()")
        return self._con

    # -- topics -----------------------------------------------------------------
    async def ensure_topics(self, topics: Sequence[TopicSpec]) -> None:
        async with self._lock:
            await anyio.to_thread.run_sync(self._ensure_topics, list(topics))

    def _ensure_topics(self, topics: list[TopicSpec]) -> None:
        with self.gate.hold():
            self._ensure_topics_locked(topics)

    def _ensure_topics_locked(self, topics: list[TopicSpec]) -> None:
        con = self._db()
        con.execute("BEGIN IMMEDIATE")
        try:
            for t in topics:
                cur = con.execute(
                    "INSERT OR IGNORE INTO topics(name, partitions, retention_s, retention_bytes,"
                    " priority) VALUES (?,?,?,?,?)",
                    (t.name, t.partitions, t.retention_s, t.retention_bytes, t.priority),
                )
                if cur.rowcount:
                    tid = cur.lastrowid
                    con.executemany(
                        "INSERT INTO partitions(tid, partition) VALUES (?,?)",
                        [(tid, p) for p in range(t.partitions)],
                    )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self._load_topics(con)

    async def topics(self) -> list[TopicSpec]:
        """Every topic in the file with its settings."""
        rows = await self._read(
            "SELECT name, partitions, retention_s, retention_bytes, priority FROM topics"
            " ORDER BY name"
        )
        return [
            TopicSpec(name=n, partitions=p, retention_s=r, retention_bytes=b, priority=pr)
            for n, p, r, b, pr in rows
        ]

    async def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        """``{partition: (oldest retained offset, next offset)}`` of a topic."""
        rows = await self._read(
            "SELECT p.partition, p.start_offset, p.next_offset FROM partitions p"
            " JOIN topics t ON t.tid = p.tid WHERE t.name = ? ORDER BY p.partition",
            (topic,),
        )
        return {p: (s, n) for p, s, n in rows}

    async def read(self, topic: str, partition: int, offset: int, limit: int) -> list[LogRecord]:
        """Up to ``limit`` records of one partition from ``offset`` (no group, no commit)."""
        tids = await self._read("SELECT tid FROM topics WHERE name=?", (topic,))
        if not tids:
            raise UnknownTopic(topic)
        tid = tids[0][0]
        return await self._read_records(tid, topic, partition, offset, limit)

    async def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        def run() -> list[tuple]:
            con = connect(self.path, self.busy_timeout_s)
            try:
                return con.execute(sql, params).fetchall()
            finally:
                con.close()

        return await anyio.to_thread.run_sync(run)

    async def _read_records(
        self, tid: int, topic: str, partition: int, offset: int, limit: int
    ) -> list[LogRecord]:
        def run() -> list[LogRecord]:
            con = connect(self.path, self.busy_timeout_s)
            try:
                cur = con.execute(_BATCHES_FROM, (tid, partition, tid, partition, offset))
                try:
                    return unpack_batches(topic, partition, cur, offset, limit)
                finally:
                    cur.close()
            finally:
                con.close()

        return await anyio.to_thread.run_sync(run)

    def _topic(self, topic: str) -> tuple[int, int]:
        t = self._topics.get(topic)
        if t is None:
            self._load_topics(self._db())  # another process may have created it
            t = self._topics.get(topic)
            if t is None:
                raise UnknownTopic(topic)
        return t

    # -- append -----------------------------------------------------------------
    async def append(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes]],
        *,
        bypass_block: bool = False,
        sync: bool = True,
    ) -> None:
        """Append; returns after the commit, durable unless ``sync=False`` (then
        durable after the next synced commit or ``sync()``: see the module doc).
        Waits while the disk tier blocks (``bypass_block`` is for the gateway's own
        overflow/alarm events)."""
        if not records:
            return
        if not bypass_block and not self._unblocked.is_set():
            await self._unblocked.wait()
        item = _Pending(topic, records, sync)
        with self._pending_mutex:
            self._pending.append(item)
        async with self._lock:
            if not item.written and item.error is None:  # still pending: write it
                await anyio.to_thread.run_sync(self._write)
                self._new_data.set()
                self._new_data = anyio.Event()
        if item.error is not None:
            raise item.error

    def _write(self) -> None:
        with self.gate.hold():
            with self._pending_mutex:
                batch, self._pending = self._pending, []
            self._write_locked(batch)
        if any(item.written for item in batch):
            changes.touch(self.changed_path)  # wakes consumers in other processes

    async def sync(self) -> None:
        """Make every transaction committed so far (by any process) durable: the
        fsync of the WAL a synced commit would do (after a checkpoint reset the
        WAL, what it held is in the database file, synced by that checkpoint)."""

        def run() -> None:
            try:
                fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        await anyio.to_thread.run_sync(run)

    def _write_locked(self, batch: list[_Pending]) -> None:
        con = self._db()
        ok: list[_Pending] = []
        now = self.clock()
        unsynced = not any(item.sync for item in batch)
        if unsynced:  # this transaction only; every other write stays FULL
            con.execute("PRAGMA synchronous=NORMAL")
        try:
            self._transaction(con, batch, ok, now)
        finally:
            if unsynced:
                con.execute("PRAGMA synchronous=FULL")
        for item in ok:
            item.written = True
            self.appended += len(item.records)

    def _transaction(self, con: sqlite3.Connection, batch: list[_Pending], ok: list[_Pending],
                     now: int) -> None:
        try:
            con.execute("BEGIN IMMEDIATE")
            for item in batch:
                try:
                    tid, parts = self._topic(item.topic)
                except UnknownTopic as e:
                    item.error = e
                    continue
                if parts == 1:
                    by_part = {0: list(item.records)}
                else:
                    by_part = {}
                    for rec in item.records:
                        by_part.setdefault(partition_for(rec[0], parts), []).append(rec)
                for p, recs in by_part.items():
                    (nxt,) = con.execute(
                        "SELECT next_offset FROM partitions WHERE tid=? AND partition=?", (tid, p)
                    ).fetchone()
                    base, total = nxt, 0
                    for count, payload in _payloads(recs):
                        con.execute(
                            "INSERT INTO batches VALUES (?,?,?,?,?,?,?)",
                            (tid, p, base, base + count - 1, now, len(payload), payload),
                        )
                        base += count
                        total += len(payload)
                    con.execute(
                        "UPDATE partitions SET next_offset=?, bytes=bytes+? WHERE tid=? AND"
                        " partition=?",
                        (base, total, tid, p),
                    )
                ok.append(item)
            con.execute("COMMIT")
        except BaseException as e:
            if con.in_transaction:
                con.execute("ROLLBACK")
            for item in batch:
                item.error = item.error or e
            ok.clear()
            return
        self.transactions += 1

    # -- disk-full blocking (driven by otgate.actors.log.retention) ---------------
    def set_blocked(self, blocked: bool) -> None:
        """Make appends wait (True) or release them (False)."""
        if blocked and self._unblocked.is_set():
            self._unblocked = anyio.Event()
        elif not blocked:
            self._unblocked.set()

    @property
    def blocked(self) -> bool:
        return not self._unblocked.is_set()

    # -- consumer groups (operator) -----------------------------------------------
    async def groups(self) -> list[tuple[str, str, int, int, int]]:
        """``(group, topic, partition, committed offset, next offset)`` of every
        group that committed, by group."""
        return await self._read(
            "SELECT g.grp, t.name, g.partition, g.offset, p.next_offset FROM group_offsets g"
            " JOIN topics t ON t.tid = g.tid JOIN partitions p ON p.tid = g.tid AND"
            " p.partition = g.partition ORDER BY g.grp, t.name, g.partition"
        )

    async def drop_group(self, group: str) -> int:
        """Forget a group's committed offsets (a removed sink's group holds its
        topics from retention); returns the partitions it had."""

        def run() -> int:
            con = connect(self.path, self.busy_timeout_s)
            try:
                with self.gate.hold(), con:
                    return con.execute("DELETE FROM group_offsets WHERE grp=?", (group,)).rowcount
            finally:
                con.close()

        return await anyio.to_thread.run_sync(run)

    # -- consume ----------------------------------------------------------------
    def consumer(self, group: str, topics: Sequence[str]) -> EmbeddedConsumer:
        from otgate.actors.log.embedded_consumer import EmbeddedConsumer

        return EmbeddedConsumer(self, group, list(topics))

    # -- schema table -----------------------------------------------------------
    async def register_schema(self, subject: str, schema: str) -> int:
        """Id of ``schema`` (canonical JSON) under ``subject``; registers it when new."""

        def run() -> int:
            con = connect(self.path, self.busy_timeout_s)
            try:
                with self.gate.hold():
                    con.execute("BEGIN IMMEDIATE")
                    row = con.execute(
                        "SELECT id FROM schemas WHERE subject=? AND schema=?", (subject, schema)
                    ).fetchone()
                    if row is None:
                        (ver,) = con.execute(
                            "SELECT COALESCE(MAX(version), 0) + 1 FROM schemas WHERE subject=?",
                            (subject,),
                        ).fetchone()
                        cur = con.execute(
                            "INSERT INTO schemas(subject, version, schema) VALUES (?,?,?)",
                            (subject, ver, schema),
                        )
                        row = (cur.lastrowid,)
                    con.execute("COMMIT")
                    return int(row[0])
            finally:
                con.close()

        return await anyio.to_thread.run_sync(run)

    async def schema_by_id(self, schema_id: int) -> str | None:
        rows = await self._read("SELECT schema FROM schemas WHERE id=?", (schema_id,))
        return rows[0][0] if rows else None

    async def latest_schema(self, subject: str) -> tuple[int, str] | None:
        rows = await self._read(
            "SELECT id, schema FROM schemas WHERE subject=? ORDER BY version DESC LIMIT 1",
            (subject,),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def statistics(self) -> dict[str, Any]:
        return {
            "appended": self.appended,
            "transactions": self.transactions,
            "blocked": self.blocked,
        }
