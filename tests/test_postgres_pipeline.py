"""End to end on the embedded log: raw → validator → aggregator → PostgreSQL, built from config."""

from __future__ import annotations

import anyio
import msgspec
import psycopg
import pytest
from peers.postgres import pg_dsn_fixture, pg_server_fixture  # noqa: F401
from stage_log import open_log, read_all, wait_until

from otgate.actors.context import BuildContext
from otgate.actors.log.publisher import ReadingPublisher
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.processing import ProcessingConfig
from otgate.actors.records import Reading
from otgate.actors.stage_codec import LogCodec
from otgate.sinks.postgres import PostgresSink

S = 1_000_000_000
T0 = 1_700_000_000 * S


@pytest.mark.anyio
async def test_raw_to_postgres_through_validator_and_aggregator(pg_dsn, tmp_path):
    lg = await open_log(tmp_path, partitions=2)
    try:
        schemas = EmbeddedSchemaStore(lg)
        pub = ReadingPublisher(lg, schemas)
        await pub.start()
        ctx = BuildContext(gateway_id="gw", publish=pub.publish, state_dir=tmp_path, log=lg,
                           extras={"schemas": schemas})
        processing = msgspec.convert({
            "validator": {"rules": [{"parameter": "temp", "min": 0, "max": 1000}]},
            "aggregator": {"resolutions": ["1s"], "watermark_lateness_s": 0.2,
                           "checkpoint_interval_s": 0.2},
        }, ProcessingConfig)
        sink_cfg = msgspec.convert({
            "type": "postgres", "id": "db", "dsn": pg_dsn, "db_schema": "e2e",
            "topics": ["telemetry.clean", "telemetry.1s"], "fetch_timeout_s": 0.05,
        }, PostgresSink)
        actors = [*processing.build(ctx), sink_cfg.build(ctx)]
        # 4 assets x 2 parameters x 50 readings at 10 Hz = 5 s of device time
        readings = [
            Reading(asset_id=f"a{a}", parameter=p, value=float(i), device_time=T0 + i * S // 10,
                    gateway_time=T0 + i * S // 10, seq=i)
            for i in range(50) for a in range(4) for p in ("temp", "flow")
        ]
        async with anyio.create_task_group() as tg:
            for actor in actors:
                await tg.start(actor.run)
            for i in range(0, len(readings), 40):
                await pub.publish(readings[i:i + 40])

            async def landed() -> bool:
                async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
                    try:
                        r = await (await conn.execute(
                            "SELECT (SELECT count(*) FROM e2e.otgate_readings),"
                            " (SELECT count(*) FROM e2e.otgate_aggregates)")).fetchone()
                    except psycopg.errors.UndefinedTable:
                        return False
                # 400 readings; windows [0,1)..[3,4) closed per stream (4.9 - 0.2 >= 4)
                return r == (400, 4 * 2 * 4)

            await wait_until(landed, 20)
            tg.cancel_scope.cancel()
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            counts = await (await conn.execute(
                "SELECT DISTINCT count FROM e2e.otgate_aggregates")).fetchall()
            stats = await (await conn.execute(
                "SELECT count(*) FROM e2e.otgate_aggregates WHERE stddev IS NULL"
                " OR p50 IS NULL OR p95 IS NULL OR p99 IS NULL OR count_good + count_suspect"
                " + count_uncertain + count_bad <> count")).fetchone()
        assert counts == [(10,)]
        assert stats == (0,)  # every window carries its spread and quality summary
        assert all(a.state.value in ("STOPPED", "RUNNING") for a in actors)
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_pipeline_stopped_mid_stream_and_restarted_loses_and_repeats_nothing(
    pg_dsn, tmp_path,
):
    lg = await open_log(tmp_path, partitions=2)
    try:
        schemas = EmbeddedSchemaStore(lg)
        pub = ReadingPublisher(lg, schemas)
        await pub.start()
        processing = msgspec.convert({
            "aggregator": {"resolutions": ["1s", "1min"], "watermark_lateness_s": 0.2,
                           "checkpoint_interval_s": 0.05},
        }, ProcessingConfig)
        sink_cfg = msgspec.convert({
            "type": "postgres", "id": "db", "dsn": pg_dsn, "db_schema": "restart",
            "topics": ["telemetry.clean", "telemetry.1s"], "fetch_timeout_s": 0.05,
            "batch_size": 37,
        }, PostgresSink)
        # 3 assets x 1 parameter x 300 readings at 10 Hz = 30 s of device time
        readings = [
            Reading(asset_id=f"a{a}", parameter="v", value=float(i),
                    device_time=T0 + i * S // 10, gateway_time=T0 + i * S // 10, seq=i)
            for i in range(300) for a in range(3)
        ]

        def build() -> list:
            ctx = BuildContext(gateway_id="gw", publish=pub.publish, state_dir=tmp_path, log=lg,
                               extras={"schemas": schemas})
            return [*processing.build(ctx), sink_cfg.build(ctx)]

        for stop_after in (150, 450, 900):  # readings published before each stop
            actors = build()
            async with anyio.create_task_group() as tg:
                for actor in actors:
                    await tg.start(actor.run)
                done = pub.published
                for i in range(done, stop_after, 30):
                    await pub.publish(readings[i:min(i + 30, stop_after)])
                    await anyio.sleep(0.01)
                # stop while batches are in flight: a mid-stream stop
                await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
        # final run: let everything drain
        actors = build()
        async with anyio.create_task_group() as tg:
            for actor in actors:
                await tg.start(actor.run)

            async def drained() -> bool:
                async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
                    r = await (await conn.execute(
                        "SELECT (SELECT count(*) FROM restart.otgate_readings),"
                        " (SELECT count(*) FROM restart.otgate_aggregates)")).fetchone()
                # 900 readings; 1 s windows [0,1)..[28,29) closed per asset (29.9-0.2 < 30)
                return r == (900, 3 * 29)

            await wait_until(drained, 30)
            tg.cancel_scope.cancel()
        codec = LogCodec(schemas)
        aggs = await read_all(lg, codec, "telemetry.1s")
        keys = [(a.asset_id, a.window_start) for a in aggs]
        assert len(keys) == len(set(keys)) == 3 * 29  # no window emitted twice
        assert {a.count for a in aggs} == {10}  # and none partial
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            seqs = await (await conn.execute(
                "SELECT asset_id, array_agg(seq ORDER BY seq) FROM restart.otgate_readings"
                " GROUP BY asset_id")).fetchall()
        assert all(s == list(range(300)) for _, s in seqs) and len(seqs) == 3
    finally:
        await lg.close()
