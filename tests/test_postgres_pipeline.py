"""End to end on the embedded log: raw → validator → aggregator → PostgreSQL, built from config."""

from __future__ import annotations

import anyio
import msgspec
import psycopg
import pytest
from otgate.actors.context import BuildContext
from otgate.actors.log.publisher import ReadingPublisher
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.processing import ProcessingConfig
from otgate.actors.records import Reading
from otgate.sinks.postgres import PostgresSink
from peers.postgres import pg_dsn_fixture, pg_server_fixture  # noqa: F401
from stage_log import open_log, wait_until

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
        assert counts == [(10,)]
        assert all(a.state.value in ("STOPPED", "RUNNING") for a in actors)
    finally:
        await lg.close()
