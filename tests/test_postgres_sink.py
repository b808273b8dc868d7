"""PostgreSQL sink against a real server: tables, idempotent upserts, DLQ, outage + breaker."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import anyio
import msgspec
import psycopg
import pytest
from peers.postgres import (  # noqa: F401
    pg_cluster_fixture,
    pg_dsn_fixture,
    pg_server_fixture,
)
from stage_log import open_log, read_all, wait_until

from otgate.actors.breaker import BreakerState
from otgate.actors.context import BuildContext
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.messages import State
from otgate.actors.records import Aggregate, Quality, Reading
from otgate.actors.stage_codec import LogCodec
from otgate.simulations.postgres_server import PostgresServer, free_port
from otgate.sinks.config import LogSinkConfig
from otgate.sinks.outcome import Outcome
from otgate.sinks.postgres import PostgresSink
from otgate.sinks.postgres.actor import PostgresSinkActor
from otgate.sinks.postgres.client import PgClient, is_retriable, reading_row
from otgate.sinks.postgres.config import redact_dsn

S = 1_000_000_000
T0 = 1_700_000_000 * S
_n = 0


def unique(prefix: str) -> str:
    global _n
    _n += 1
    return f"{prefix}{_n}"


def rd(i: int, asset: str = "pump-1", value: object = None) -> Reading:
    t = T0 + i * S // 10
    return Reading(
        asset_id=asset,
        parameter="temp",
        value=float(i) if value is None else value,
        device_time=t,
        gateway_time=t + 1000,
        seq=i,
        adapter_id="sim",
    )


def sink_config(dsn: str, **kw) -> PostgresSink:
    base = dict(id=unique("pg"), dsn=dsn, db_schema=unique("s"), fetch_timeout_s=0.05)
    base.update(kw)
    return msgspec.convert(base, PostgresSink)


async def rows(dsn: str, cfg: PostgresSink, table: str | None = None) -> list[tuple]:
    table = table or cfg.readings_table
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        try:
            cur = await conn.execute(
                f"SELECT asset_id, parameter, device_time, value, seq, quality"
                f" FROM {cfg.db_schema}.{table} ORDER BY seq"
                if table == cfg.readings_table
                else f"SELECT asset_id, resolution, window_start, count, avg"
                f" FROM {cfg.db_schema}.{table} ORDER BY window_start"
            )
        except psycopg.errors.UndefinedTable:
            return []
        return await cur.fetchall()


def test_config_tag_defaults_and_redaction():
    cfg = msgspec.convert(
        {"type": "postgres", "id": "db1", "dsn": "host=h password=s3cret"}, PostgresSink
    )
    assert cfg.consumer_group == "sink.db1"
    assert "s3cret" not in cfg.redacted_dsn()
    assert redact_dsn("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(msgspec.ValidationError, match="neither readings nor aggregates"):
        msgspec.convert({"id": "x", "dsn": "d", "topics": ["alarms.clean"]}, PostgresSink)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"id": "x", "dsn": "d", "readings_table": "Bad-Name"}, PostgresSink)


def test_config_is_a_log_sink_config_and_reads_the_old_field_names(tmp_path):
    """Every field a pg sink config could name before it joined LogSinkConfig still
    means the same; the shared batching fields are new; the pg defaults stay."""
    old = {
        "type": "postgres", "id": "hist", "dsn": "host=h password=pw", "group": "g1",
        "topics": ["telemetry.clean", "telemetry.1min"], "db_schema": "plant",
        "readings_table": "r", "aggregates_table": "a", "on_conflict": "update",
        "batch_size": 100_000, "fetch_timeout_s": 0.5, "connect_timeout_s": 2.0,
        "statement_timeout_s": 9.0, "breaker_failures": 4, "breaker_cooldown_s": 6.0,
        "retry_initial_s": 0.3, "retry_max_s": 7.0, "dlq_topic": "dlq.events",
    }
    cfg = msgspec.convert(old, PostgresSink)
    assert isinstance(cfg, LogSinkConfig)
    assert {k: msgspec.to_builtins(getattr(cfg, k)) for k in old if k != "type"} == {
        k: v for k, v in old.items() if k != "type"}
    with pytest.raises(msgspec.ValidationError, match="<= 100000"):
        msgspec.convert({**old, "batch_size": 100_001}, PostgresSink)
    with pytest.raises(msgspec.ValidationError, match="retry_initial_s"):
        msgspec.convert({**old, "retry_initial_s": 8.0}, PostgresSink)
    defaults = msgspec.convert({"id": "d", "dsn": "x"}, PostgresSink)
    assert defaults.topics == ["telemetry.clean", "events.clean", "telemetry.1s"]
    assert (defaults.batch_size, defaults.prefetch, defaults.batch_wait_s) == (5000, False, 0.0)
    cfg = msgspec.convert({**old, "batch_wait_s": 0.5, "batch_bytes": 1 << 20,
                           "prefetch": True}, PostgresSink)
    ctx = BuildContext(gateway_id="plant-7", publish=None, state_dir=tmp_path, log=object(),
                       extras={"codec": object()})
    sink = cfg.build(ctx)
    assert isinstance(sink, PostgresSinkActor) and sink.id == "sink.hist"
    assert (sink.group, sink.batch_size, sink.batch_wait_s, sink.batch_bytes, sink.prefetch,
            sink.retry_initial_s, sink.dlq_topic) == ("g1", 100_000, 0.5, 1 << 20, True,
                                                      0.3, "dlq.events")
    assert sink.breaker.core.failure_threshold == 4 and "pw" not in sink.breaker.destination
    assert sink.client.application_name == "otgate-plant-7-hist"

@pytest.mark.anyio
async def test_client_creates_tables_brin_and_upsert_is_idempotent(pg_dsn):
    cfg = sink_config(pg_dsn)
    client = PgClient(cfg)
    try:
        batch = [reading_row(rd(i)) for i in range(100)]
        await client.write("readings", batch)
        await client.write("readings", batch[50:] + batch[:10])  # a replay
        assert await client.count("readings") == 100
        assert client.hypertables is False  # no timescaledb here
        got = await rows(pg_dsn, cfg)
        assert got[3][2].timestamp() == pytest.approx((T0 + 3 * S // 10) / 1e9)
        assert got[3][3] == 3.0 and got[3][5] == "GOOD"
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            cur = await conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = %s", (cfg.db_schema,)
            )
            defs = [r[0] for r in await cur.fetchall()]
        assert any("USING brin (device_time)" in d for d in defs)
    finally:
        await client.close()


@pytest.mark.anyio
async def test_direct_copy_and_staged_path_store_the_same_times(pg_dsn):
    """The fast path (COPY into the table) converts ns like the staged INSERT does;
    a batch with a stored key (a replay) falls back to the staged path."""
    cfg = sink_config(pg_dsn)
    client = PgClient(cfg)
    times = [T0 + 123_456_789, T0 + 999, 1, -1_500, -(10**15) - 1]  # sub-µs, pre-1970
    try:
        first = [reading_row(msgspec.structs.replace(rd(i), device_time=t, seq=i))
                 for i, t in enumerate(times)]
        await client.write("readings", first)
        assert (client.direct_batches, client.staged_batches) == (1, 0)
        other = [reading_row(msgspec.structs.replace(rd(i, asset="pump-2"), device_time=t,
                                                     seq=10 + i))
                 for i, t in enumerate(times)]
        await client.write("readings", other[:2] + first[:1])  # pump-1's key is stored
        assert (client.direct_batches, client.staged_batches) == (1, 1)
        await client.write("readings", other)  # two keys stored again: staged
        assert await client.count("readings") == 10
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            cur = await conn.execute(
                f"SELECT asset_id, seq, (extract(epoch FROM device_time) * 1e6)::int8"
                f" FROM {cfg.db_schema}.{cfg.readings_table} ORDER BY asset_id, seq"
            )
            got = await cur.fetchall()
        want_us = [t // 1000 if t >= 0 else -((-t) // 1000) for t in times]  # truncated
        assert [r[2] for r in got if r[0] == "pump-1"] == want_us
        assert [r[2] for r in got if r[0] == "pump-2"] == want_us
    finally:
        await client.close()


@pytest.mark.anyio
async def test_on_conflict_update_keeps_the_last_write(pg_dsn):
    cfg = sink_config(pg_dsn, on_conflict="update")
    client = PgClient(cfg)
    try:
        await client.write("readings", [reading_row(rd(1, value=1.0))])
        newer = msgspec.structs.replace(rd(1, value=2.0), gateway_time=T0 + 5 * S)
        await client.write("readings", [reading_row(newer), reading_row(rd(1, value=3.0))])
        assert [r[3] for r in await rows(pg_dsn, cfg)] == [2.0]
    finally:
        await client.close()


def test_is_retriable_whitelist():
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(f"host=127.0.0.1 port={free_port()} user=x connect_timeout=1")
    assert is_retriable(info.value)
    assert is_retriable(psycopg.errors.AdminShutdown("terminating"))
    assert is_retriable(psycopg.errors.SerializationFailure("x"))
    assert is_retriable(ConnectionResetError())
    assert not is_retriable(psycopg.errors.UndefinedTable("x"))
    assert not is_retriable(psycopg.errors.CharacterNotInRepertoire("x"))
    assert not is_retriable(ValueError("x"))


async def start_codec(lg) -> LogCodec:
    codec = LogCodec(EmbeddedSchemaStore(lg))
    await codec.prepare(["telemetry.clean", "telemetry.1s", "dlq.telemetry"])
    return codec


async def append(lg, codec, topic: str, records: list) -> None:
    await lg.append(topic, [(r.asset_id.encode(), codec.encode(topic, r)) for r in records])


@pytest.mark.anyio
async def test_sink_writes_readings_and_aggregates_and_commits(pg_dsn, tmp_path):
    lg = await open_log(tmp_path)
    try:
        codec = await start_codec(lg)
        await append(lg, codec, "telemetry.clean", [rd(i) for i in range(250)])
        agg = Aggregate(
            asset_id="pump-1",
            parameter="temp",
            window="1s",
            window_start=T0,
            window_end=T0 + S,
            count=10,
            min=0.0,
            max=9.0,
            mean=4.5,
            quality=Quality.GOOD,
            gateway_time=T0,
        )
        await append(lg, codec, "telemetry.1s", [agg])
        cfg = sink_config(pg_dsn, topics=["telemetry.clean", "telemetry.1s"], batch_size=100)
        sink = PostgresSinkActor("sink.pg", cfg, lg, codec)
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)

            async def all_delivered() -> bool:
                return sink.delivered == 251

            await wait_until(all_delivered)
            tg.cancel_scope.cancel()
        assert [r[4] for r in await rows(pg_dsn, cfg)] == list(range(250))
        (a,) = await rows(pg_dsn, cfg, cfg.aggregates_table)
        assert (a[1], a[3], a[4]) == ("1s", 10, 4.5)
        # offsets committed only as far as delivered: the group has nothing left
        c = lg.consumer(cfg.consumer_group, cfg.topics)
        assert await c.fetch(10, 0.05) == []
        await c.close()
        snap = sink.snapshot()
        assert snap.metrics["delivered_total"] == 251.0
        assert snap.children[0].kind == "circuit_breaker"
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_rows_refused_by_the_database_go_to_dlq(pg_dsn, tmp_path):
    lg = await open_log(tmp_path)
    try:
        codec = await start_codec(lg)
        bad = rd(5, asset="pump\x00nul")  # PostgreSQL text cannot hold NUL
        good = [rd(i) for i in range(10) if i != 5]
        await append(lg, codec, "telemetry.clean", [*good[:5], bad, *good[5:]])
        cfg = sink_config(pg_dsn, topics=["telemetry.clean"])
        sink = PostgresSinkActor("sink.pg", cfg, lg, codec)
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)

            async def done() -> bool:
                return sink.delivered == 10

            await wait_until(done)
            tg.cancel_scope.cancel()
        assert [r[4] for r in await rows(pg_dsn, cfg)] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
        (dead,) = await read_all(lg, codec, "dlq.telemetry")
        assert dead.reason == "rejected_by_database" and dead.reading.seq == 5
        assert dead.source_offset == 5 and "CharacterNotInRepertoire" in dead.error
        assert sink.metrics()["rejected_total"] == 1.0
    finally:
        await lg.close()


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[list]:
    """What the cyclic GC finds unreachable after the block (saved, not freed)."""
    gc.collect()
    found: list = []
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found += gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.mark.anyio
async def test_failed_replayed_and_refused_batches_leave_no_rows_in_reference_cycles(
    pg_dsn, tmp_path
):
    """A bulkhead runs the cyclic GC rarely, so a batch held by a reference cycle
    (psycopg's error -> traceback -> frame -> rows) stays in memory: during an
    outage one more batch per failed try. After N failed tries, a replay (staged
    path) and a refused row, no batch-sized list is left in a cycle."""
    lg = await open_log(tmp_path)
    try:
        codec = await start_codec(lg)
        n = 400
        await append(lg, codec, "telemetry.clean",
                     [*(rd(i) for i in range(n - 1)), rd(n, asset="pump\x00nul")])
        c = lg.consumer("peek", ["telemetry.clean"])
        batch = await c.fetch(n, 1.0)
        await c.close()
        down = f"host=127.0.0.1 port={free_port()} user=postgres dbname=x"
        failing = PostgresSinkActor("sink.down", sink_config(down, connect_timeout_s=1), lg, codec)
        cfg = sink_config(pg_dsn, topics=["telemetry.clean"])
        sink = PostgresSinkActor("sink.pg", cfg, lg, codec)
        with cyclic_garbage() as garbage:
            for _ in range(3):
                assert (await failing.deliver(batch))[0] is Outcome.ERRORED
            for _ in range(2):  # the second is a replay: the staged path decides
                assert (await sink.deliver(batch))[0] is Outcome.DELIVERED
        await sink.close_client()
        assert sink.client.staged_batches >= 1 and sink.rejected == 2
        held = [o for o in garbage if isinstance(o, list | tuple) and len(o) >= n - 1]
        assert held == [], f"{len(held)} batch-sized lists in reference cycles"
    finally:
        await lg.close()

@pytest.mark.anyio
async def test_unreachable_database_opens_breaker_and_keeps_data(tmp_path):
    lg = await open_log(tmp_path)
    try:
        codec = await start_codec(lg)
        await append(lg, codec, "telemetry.clean", [rd(i) for i in range(20)])
        dsn = f"host=127.0.0.1 port={free_port()} user=postgres password=hunter2 dbname=x"
        cfg = sink_config(
            dsn,
            breaker_failures=2,
            breaker_cooldown_s=30,
            retry_initial_s=0.01,
            connect_timeout_s=1,
        )
        sink = PostgresSinkActor("sink.pg", cfg, lg, codec)
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)

            async def opened() -> bool:
                return sink.breaker.breaker_state is BreakerState.OPEN and sink.lag == 20

            await wait_until(opened)
            snap = sink.snapshot()
            tg.cancel_scope.cancel()
        assert snap.state is State.DEGRADED
        assert snap.metrics["breaker_state"] == 2.0 and snap.metrics["lag_records"] == 20.0
        assert snap.children[0].state is State.DEGRADED
        assert "hunter2" not in repr(snap) and "hunter2" not in sink.breaker.destination
        c = lg.consumer(cfg.consumer_group, cfg.topics)  # nothing was committed
        assert len(await c.fetch(100, 0.05)) == 20
        await c.close()
    finally:
        await lg.close()


@pytest.mark.anyio
@pytest.mark.slow
async def test_database_outage_breaker_opens_then_recovers_without_loss_or_duplicates(
    pg_cluster: PostgresServer,
    tmp_path,
):
    lg = await open_log(tmp_path)
    dsn = pg_cluster.dsn()
    try:
        codec = await start_codec(lg)
        cfg = sink_config(
            dsn,
            breaker_failures=2,
            breaker_cooldown_s=0.5,
            retry_initial_s=0.05,
            connect_timeout_s=1,
            batch_size=50,
        )
        sink = PostgresSinkActor("sink.pg", cfg, lg, codec)
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            await append(lg, codec, "telemetry.clean", [rd(i) for i in range(100)])

            async def first_done() -> bool:
                return sink.delivered == 100

            await wait_until(first_done)
            await anyio.to_thread.run_sync(pg_cluster.stop)
            await append(lg, codec, "telemetry.clean", [rd(i) for i in range(100, 300)])

            async def opened() -> bool:
                return sink.breaker.breaker_state is BreakerState.OPEN and sink.lag == 200

            await wait_until(opened, 20)
            assert sink.state is State.DEGRADED and sink.delivered == 100
            await anyio.to_thread.run_sync(pg_cluster.start)

            async def recovered() -> bool:
                return sink.delivered == 300 and sink.lag == 0

            await wait_until(recovered, 30)

            async def trimmed() -> bool:  # the backlog delivered: the heap was trimmed once
                return sink.snapshot().metrics["heap_trims_total"] == 1.0

            await wait_until(trimmed, 5)
            assert sink.breaker.breaker_state is BreakerState.CLOSED
            assert sink.state is State.RUNNING
            states = [t.to_state for t in sink.breaker.transitions()]
            assert states[:1] == [BreakerState.OPEN] and states[-1] is BreakerState.CLOSED
            tg.cancel_scope.cancel()
        got = await rows(dsn, cfg)
        assert [r[4] for r in got] == list(range(300))  # none lost, none twice
        # a full replay (new group, same tables) adds nothing
        replay = sink_config(dsn, id=unique("replay"), db_schema=cfg.db_schema)
        sink2 = PostgresSinkActor("sink.replay", replay, lg, codec)
        async with anyio.create_task_group() as tg:
            await tg.start(sink2.run)

            async def replayed() -> bool:
                return sink2.delivered == 300

            await wait_until(replayed)
            tg.cancel_scope.cancel()
        assert len(await rows(dsn, cfg)) == 300
    finally:
        await lg.close()
