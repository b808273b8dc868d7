"""PostgreSQL I/O of the sink: tables, batched idempotent writes, error classification.

One connection (psycopg 3, async), one writer. A batch is one transaction.
Fast path: binary ``COPY`` straight into the table inside a savepoint (half
the server CPU of the staged path, measured here). If the table refuses it
(a key already stored: a replay; or any data error) the savepoint is rolled
back and the batch takes the staged path in the same transaction: binary
``COPY`` into a temporary staging table, then ``INSERT … SELECT … ON
CONFLICT (key) DO NOTHING`` (or ``DO UPDATE`` with the batch deduplicated
first), so a replayed batch creates no duplicates and the staged path stays
the one that decides what is refused. Record times (integer nanoseconds)
become ``timestamptz`` truncated to microseconds (toward zero): the rows
carry PostgreSQL's own binary form (µs since 2000-01-01, ``pg_time``), which
COPY sends as an int8 — a timestamptz is the same 8 bytes on the wire.
Readings closer than 1 µs on one (asset, parameter) are the same row.

Tables are created when missing. With the ``timescaledb`` extension
installed the readings and aggregates tables become hypertables; otherwise
they are plain tables with a BRIN index on their time column.

Errors: ``is_retriable`` is a whitelist (connection loss, server shutdown,
timeouts, serialization/deadlock, resource exhaustion). ``is_data_error``
marks errors caused by the rows themselves (bad text, out-of-range values),
which the sink isolates by splitting the batch. Anything else is neither:
the actor fails and its supervisor decides.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql

from otgate.actors.records import Aggregate, Reading
from otgate.sinks.postgres.config import OnConflict, PostgresSink

log = logging.getLogger("otgate.sinks.postgres")

READING_COLUMNS = (
    ("asset_id", "text NOT NULL", "text"),
    ("parameter", "text NOT NULL", "text"),
    ("device_time", "timestamptz NOT NULL", "int8"),
    ("value", "double precision", "float8"),
    ("value_text", "text", "text"),
    ("unit", "text", "text"),
    ("quality", "text NOT NULL", "text"),
    ("classification", "text NOT NULL", "text"),
    ("gateway_time", "timestamptz NOT NULL", "int8"),
    ("clock_skew_ms", "bigint", "int8"),
    ("seq", "bigint", "int8"),
    ("adapter_id", "text", "text"),
)
READING_KEY = ("asset_id", "parameter", "device_time")

AGGREGATE_COLUMNS = (
    ("asset_id", "text NOT NULL", "text"),
    ("parameter", "text NOT NULL", "text"),
    ("resolution", "text NOT NULL", "text"),
    ("window_start", "timestamptz NOT NULL", "int8"),
    ("window_end", "timestamptz NOT NULL", "int8"),
    ("count", "bigint NOT NULL", "int8"),
    ("min", "double precision", "float8"),
    ("max", "double precision", "float8"),
    ("avg", "double precision", "float8"),
    ("sum", "double precision", "float8"),
    ("stddev", "double precision", "float8"),
    ("p50", "double precision", "float8"),
    ("p95", "double precision", "float8"),
    ("p99", "double precision", "float8"),
    ("count_good", "bigint", "int8"),
    ("count_suspect", "bigint", "int8"),
    ("count_uncertain", "bigint", "int8"),
    ("count_bad", "bigint", "int8"),
    ("unit", "text", "text"),
    ("quality", "text NOT NULL", "text"),
    ("gateway_time", "timestamptz NOT NULL", "int8"),
)
AGGREGATE_KEY = ("asset_id", "parameter", "resolution", "window_start")


def is_retriable(exc: BaseException) -> bool:
    """True for errors a later retry of the same batch can cure (a whitelist)."""
    if isinstance(
        exc,
        psycopg.errors.SerializationFailure
        | psycopg.errors.DeadlockDetected
        | psycopg.errors.QueryCanceled
        | psycopg.errors.AdminShutdown
        | psycopg.errors.CrashShutdown
        | psycopg.errors.CannotConnectNow
        | psycopg.errors.TooManyConnections
        | psycopg.errors.InsufficientResources
        | psycopg.errors.LockNotAvailable,
    ):
        return True
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        return True  # no SQLSTATE: the connection failed or was lost
    if isinstance(exc, psycopg.InterfaceError) and "closed" in str(exc):
        return True  # the connection was closed under us
    return isinstance(exc, ConnectionError | TimeoutError | psycopg_pool.PoolTimeout)


def is_data_error(exc: BaseException) -> bool:
    """True when the rows themselves were refused (class 22 data exception, 23 integrity)."""
    return isinstance(exc, psycopg.DataError | psycopg.IntegrityError)


def untangle(exc: BaseException) -> None:
    """Drop the tracebacks of ``exc`` and the errors it chains.

    psycopg raises an error it holds in a local of a frame of that error's own
    traceback: a reference cycle, and the traceback also reaches the sink's
    frames and the batch's rows. Only the cyclic GC frees it, which a bulkhead
    runs rarely (``gc.set_threshold(50_000, ...)``), so during an outage every
    failed try kept a batch of rows (~1 MiB per 5,000) until then. Used for the
    errors the sink handles (retriable, data); others keep their traceback.
    """
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        stack += (e.__cause__, e.__context__)

_EPOCH_2000_US = 946_684_800_000_000


def pg_time(ns: int) -> int:
    """Nanoseconds since the Unix epoch as a binary timestamptz: µs since
    2000-01-01 UTC, truncated toward zero."""
    return (ns // 1000 if ns >= 0 else -((-ns) // 1000)) - _EPOCH_2000_US


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, str):
        return None
    return float(v)


def reading_row(r: Reading) -> tuple:
    v = r.value
    text = v if isinstance(v, str) else None
    return (
        r.asset_id, r.parameter,
        pg_time(r.device_time if r.device_time is not None else r.gateway_time),
        _num(v), text, r.unit, r.quality.value, r.classification.value, pg_time(r.gateway_time),
        r.clock_skew_ms, r.seq, r.adapter_id,
    )


READING_ROW = (
    "(f_asset_id, f_parameter, _t(f_device_time if f_device_time is not None else f_gateway_time),"
    " None if f_value is None or type(f_value) is str else float(f_value),"
    " f_value if type(f_value) is str else None, f_unit, f_quality, f_classification,"
    " _t(f_gateway_time), f_clock_skew_ms, f_seq, f_adapter_id)"
)
"""``reading_row`` as a row decoder's return expression (``LogCodec.row_decoder``):
the row straight from the Avro bytes, no Reading in between."""


AGGREGATE_ROW = (
    "(f_asset_id, f_parameter, f_window, _t(f_window_start), _t(f_window_end), f_count, f_min,"
    " f_max, f_mean, f_sum, f_stddev, f_p50, f_p95, f_p99, f_count_good, f_count_suspect,"
    " f_count_uncertain, f_count_bad, f_unit, f_quality, _t(f_gateway_time))"
)
"""``aggregate_row`` of the current Aggregate schema as a row decoder's expression."""

ROWS = {"readings": READING_ROW, "aggregates": AGGREGATE_ROW}
ROW_HELPERS = {"_t": pg_time}
"""Names the row expressions use."""


def aggregate_row(a: Aggregate) -> tuple:
    """Statistics the record version lacks are NULL (``getattr`` default)."""
    def opt(name: str) -> Any:
        return getattr(a, name, None)

    mean = opt("mean") if hasattr(a, "mean") else opt("avg")
    return (
        a.asset_id, a.parameter, a.window, pg_time(a.window_start), pg_time(a.window_end), a.count,
        a.min, a.max, mean, opt("sum"), opt("stddev"), opt("p50"), opt("p95"), opt("p99"),
        opt("count_good"), opt("count_suspect"), opt("count_uncertain"), opt("count_bad"),
        a.unit, a.quality.value, pg_time(a.gateway_time),
    )


class _Table:
    def __init__(self, schema: str, name: str, columns: tuple, key: tuple, time_col: str) -> None:
        self.schema = schema
        self.name = name
        self.columns = columns
        self.key = key
        self.time_col = time_col
        self.stage = f"otgate_stage_{name}"
        self.ident = sql.Identifier(schema, name)
        self.types = [c[2] for c in columns]  # times: int8 on the wire (see the module doc)

    def create(self) -> sql.Composed:
        cols = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(d)) for n, d, _ in self.columns]
        return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
            self.ident, sql.SQL(", ").join(cols), sql.SQL(", ").join(map(sql.Identifier, self.key))
        )

    def create_stage(self) -> sql.Composed:
        cols = []
        for n, d, _ in self.columns:
            decl = d.replace(" NOT NULL", "")
            cols.append(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(decl)))
        return sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS"
        ).format(sql.Identifier(self.stage), sql.SQL(", ").join(cols))

    def copy(self) -> sql.Composed:
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(self.stage),
            sql.SQL(", ").join(sql.Identifier(n) for n, _, _ in self.columns),
        )

    def copy_direct(self) -> sql.Composed:
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            self.ident, sql.SQL(", ").join(sql.Identifier(n) for n, _, _ in self.columns)
        )

    def insert(self, on_conflict: OnConflict) -> sql.Composed:
        names = [n for n, _, _ in self.columns]
        select = [sql.Identifier(n) for n in names]
        key = sql.SQL(", ").join(map(sql.Identifier, self.key))
        if on_conflict is OnConflict.NOTHING:
            src = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(select), sql.Identifier(self.stage)
            )
            action = sql.SQL("DO NOTHING")
        else:
            # DO UPDATE may touch a row once per statement: keep the last row per key
            key_exprs = [select[names.index(k)] for k in self.key]
            src = sql.SQL(
                "SELECT DISTINCT ON ({}) {} FROM {} ORDER BY {}, {} DESC"
            ).format(
                sql.SQL(", ").join(key_exprs), sql.SQL(", ").join(select),
                sql.Identifier(self.stage), sql.SQL(", ").join(key_exprs),
                sql.Identifier("gateway_time"),
            )
            sets = [
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(n), sql.Identifier(n))
                for n in names if n not in self.key
            ]
            action = sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(sets))
        return sql.SQL("INSERT INTO {} ({}) {} ON CONFLICT ({}) {}").format(
            self.ident, sql.SQL(", ").join(map(sql.Identifier, names)), src, key, action
        )


class PgClient:
    """The sink's connection: ``write(kind, rows)`` is one idempotent transaction."""

    def __init__(self, config: PostgresSink, gateway_id: str = "") -> None:
        self.config = config
        # pg_stat_activity shows which gateway and sink a connection is (63 bytes at most)
        self.application_name = "-".join(["otgate", *filter(None, [gateway_id, config.id])])
        self.tables = {
            "readings": _Table(config.db_schema, config.readings_table, READING_COLUMNS,
                               READING_KEY, "device_time"),
            "aggregates": _Table(config.db_schema, config.aggregates_table, AGGREGATE_COLUMNS,
                                 AGGREGATE_KEY, "window_start"),
        }
        self._inserts = {k: t.insert(config.on_conflict) for k, t in self.tables.items()}
        self._copies = {k: (t.copy(), t.copy_direct()) for k, t in self.tables.items()}
        self.direct_batches = 0
        self.staged_batches = 0
        self._conn: psycopg.AsyncConnection | None = None
        self._tables_ready = False
        self.hypertables: bool | None = None
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def connect(self) -> None:
        """Open the connection (and create the tables once). Raises on failure."""
        if self.connected:
            return
        conn = await psycopg.AsyncConnection.connect(
            self.config.dsn,
            connect_timeout=max(1, math.ceil(self.config.connect_timeout_s)),
            application_name=self.application_name,
            options=f"-c statement_timeout={int(self.config.statement_timeout_s * 1000)}",
        )
        try:
            if not self._tables_ready:
                await self._ensure_tables(conn)
            async with conn.transaction():
                for t in self.tables.values():
                    await conn.execute(t.create_stage())
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self.connects += 1

    async def _ensure_tables(self, conn: psycopg.AsyncConnection) -> None:
        async with conn.transaction():
            await conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(self.config.db_schema)
                )
            )
            cur = await conn.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
            )
            self.hypertables = await cur.fetchone() is not None
            for t in self.tables.values():
                await conn.execute(t.create())
                if self.hypertables:
                    await conn.execute(
                        "SELECT create_hypertable(%s::regclass, %s::name, if_not_exists => TRUE,"
                        " migrate_data => TRUE)",
                        (f"{t.schema}.{t.name}", t.time_col),
                    )
                else:
                    await conn.execute(
                        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING brin ({})").format(
                            sql.Identifier(f"{t.name}_{t.time_col}_brin"), t.ident,
                            sql.Identifier(t.time_col),
                        )
                    )
        self._tables_ready = True
        log.info(
            "postgres_tables_ready sink_id=%s schema=%s hypertables=%s",
            self.config.id, self.config.db_schema, self.hypertables,
        )

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def write(self, kind: str, rows: Sequence[tuple]) -> None:
        """Write rows of one kind ('readings' | 'aggregates') in one transaction.

        Returns once committed. On any error the transaction is rolled back;
        after a connection-level error the connection is dropped (the next
        write reconnects). A retriable or data error leaves with its psycopg
        frames cut off (``untangle``), so it holds no reference to ``rows``.
        """
        t = self.tables[kind]
        staged, direct = self._copies[kind]
        try:
            await self.connect()
            conn = self._conn
            assert conn is not None
            async with conn.transaction():
                async with conn.cursor() as cur:
                    try:
                        async with conn.transaction():  # a savepoint
                            async with cur.copy(direct) as copy:
                                copy.set_types(t.types)
                                for row in rows:
                                    await copy.write_row(row)
                        self.direct_batches += 1
                        return
                    except (psycopg.DataError, psycopg.IntegrityError):
                        pass  # a stored key (a replay) or a bad row: the staged path decides
                    async with cur.copy(staged) as copy:
                        copy.set_types(t.types)
                        for row in rows:
                            await copy.write_row(row)
                    await cur.execute(self._inserts[kind])
                    self.staged_batches += 1
        except BaseException as exc:
            data = is_data_error(exc)
            if not data:
                await self._drop()
            if data or is_retriable(exc):
                untangle(exc)
            raise

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except (psycopg.Error, OSError):
                pass

    async def count(self, kind: str) -> int:
        """Rows in a table (tests, the checker)."""
        await self.connect()
        assert self._conn is not None
        cur = await self._conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(self.tables[kind].ident)
        )
        row = await cur.fetchone()
        await self._conn.commit()
        return int(row[0]) if row else 0
