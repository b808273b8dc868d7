"""S3 / Parquet archive sink against alocals3: schema from the records, partitioned keys,
roll by count and by time, the store stopped and restarted, a crash mid-upload, the DLQ."""

from __future__ import annotations

import io
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
import obstore
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from obstore.store import S3Store
from peers.alocals3 import S3, start_alocals3
from stage_log import open_log, read_all, wait_until

from otgate.actors.breaker import BreakerState
from otgate.actors.log.base import LogRecord
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.messages import State
from otgate.actors.records import Aggregate, Classification, Quality, Reading
from otgate.actors.stage_codec import LogCodec
from otgate.sinks.s3 import S3Sink
from otgate.sinks.s3.actor import S3SinkActor
from otgate.sinks.s3.client import ArchiveClient
from otgate.sinks.s3.columnar import AvroColumns
from otgate.sinks.s3.parquet import (
    ROW_HELPERS,
    columns,
    row_expression,
    table,
    table_from_rows,
    to_parquet,
)

S = 1_000_000_000
T0 = 1_700_000_000 * S
BUCKET = "archive"


def rd(i: int, value: object = None) -> Reading:
    return Reading(asset_id=f"pump-{i % 3}", parameter="temp",
                   value=float(i) if value is None else value,
                   device_time=T0 + i * S, gateway_time=T0 + i * S + 5, seq=i)


def pylist(table: pa.Table) -> list[dict]:
    """Rows with timestamps as integer ns (datetime cannot hold nanoseconds)."""
    ints = pa.schema([pa.field(f.name, pa.int64()) if pa.types.is_timestamp(f.type) else f
                      for f in table.schema])
    return table.cast(ints).to_pylist()


def config(s3: S3, **kw) -> S3Sink:
    base = dict(type="s3", id="archive", bucket=BUCKET, endpoint=s3.endpoint, allow_http=True,
                access_key_id="test", secret_access_key="test", prefix="site1/",
                fetch_timeout_s=0.05, batch_wait_s=0.2, batch_size=100, retry_initial_s=0.05,
                retry_max_s=0.2, breaker_cooldown_s=0.5, timeout_s=5)
    return msgspec.convert({**base, **kw}, S3Sink)


@pytest.fixture
def s3(tmp_path: Path):
    store = start_alocals3(tmp_path / "s3", bucket=BUCKET)
    try:
        yield store
    finally:
        store.stop()


async def objects(s3: S3) -> dict[str, list[dict]]:
    """Every stored object's rows, by key (each must parse as a whole Parquet file)."""
    store = S3Store(BUCKET, endpoint=s3.endpoint, region="us-east-1", access_key_id="test",
                    secret_access_key="test", client_options={"allow_http": True})
    out = {}
    for meta in await obstore.list(store, prefix="").collect_async():
        data = await (await obstore.get_async(store, meta["path"])).bytes_async()
        out[meta["path"]] = pylist(pq.read_table(io.BytesIO(bytes(data))))
    return out


async def setup_log(tmp_path, n: int):
    lg = await open_log(tmp_path)
    codec = LogCodec(EmbeddedSchemaStore(lg))
    await codec.prepare(["telemetry.clean", "telemetry.1s", "dlq.telemetry"])
    await append(lg, codec, range(n))
    return lg, codec


async def append(lg, codec, seqs) -> None:
    await lg.append("telemetry.clean", [(rd(i).asset_id.encode(),
                                         codec.encode("telemetry.clean", rd(i))) for i in seqs])


def offsets(objs: dict[str, list[dict]]) -> list[int]:
    return sorted(r["_offset"] for rows in objs.values() for r in rows)


def test_config_checks():
    with pytest.raises(msgspec.ValidationError, match="allow_http"):
        msgspec.convert({"type": "s3", "id": "a", "bucket": "bkt", "endpoint": "http://h"},
                        S3Sink)
    with pytest.raises(msgspec.ValidationError, match="go together"):
        msgspec.convert({"type": "s3", "id": "a", "bucket": "bkt", "access_key_id": "k"},
                        S3Sink)
    from otgate.config.registry import SinkConfig

    cfg = msgspec.convert({"type": "s3", "id": "a", "bucket": "bkt"}, SinkConfig)
    assert isinstance(cfg, S3Sink) and cfg.batch_wait_s == 300.0
    assert ArchiveClient(cfg)._store().config["bucket"] == "bkt"  # AWS: no endpoint, no I/O


def test_parquet_schema_from_the_record_types():
    _, schema = columns(Reading)
    assert str(schema.field("value").type) == "double"
    assert str(schema.field("value_text").type) == "string"
    assert str(schema.field("device_time").type) == "timestamp[ns, tz=UTC]"
    assert str(schema.field("quality").type) == "string"
    assert str(schema.field("seq").type) == "int64"
    recs = [LogRecord(topic="t", partition=0, offset=i, key=None, value=b"",
                      timestamp_ns=T0) for i in range(4)]
    vals = [1.5, 7, True, "open"]
    data = to_parquet([(r, rd(i, v)) for i, (r, v) in enumerate(zip(recs, vals, strict=True))],
                      "zstd")
    f = pq.ParquetFile(io.BytesIO(data))
    assert f.metadata.row_group(0).column(5).compression == "ZSTD"
    rows = pylist(f.read())
    assert [(r["value"], r["value_text"]) for r in rows] == [
        (1.5, None), (7.0, None), (1.0, None), (None, "open")]
    assert rows[0]["quality"] == "GOOD" and rows[2]["_offset"] == 2
    assert rows[0]["device_time"] == T0 and rows[0]["gateway_time"] == T0 + 5
    agg = Aggregate(asset_id="a", parameter="p", window="1s", window_start=T0, window_end=T0 + S,
                    count=3, min=1.0, max=2.0, mean=1.5, quality=Quality.GOOD, gateway_time=T0)
    rows = pylist(pq.read_table(io.BytesIO(to_parquet([(recs[0], agg)], "snappy"))))
    assert rows[0]["count"] == 3 and rows[0]["window"] == "1s"


@pytest.mark.anyio
async def test_rows_from_the_bytes_make_the_same_table_as_the_objects(tmp_path):
    """The sink's fast path (``row_expression`` rows decoded from the Avro bytes)
    builds exactly the table the object path builds, for both record kinds."""
    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        await codec.prepare(["telemetry.clean", "telemetry.1s"])
        readings = [Reading(asset_id=f"a{i % 3}", parameter="p", value=v, unit="bar",
                            quality=Quality.SUSPECT if i % 2 else Quality.GOOD,
                            classification=Classification.EVENT, device_time=None if i else T0,
                            gateway_time=T0 + i, clock_skew_ms=i or None, seq=i,
                            adapter_id="x", adapter_version="1")
                    for i, v in enumerate([1.5, 7, True, False, "open", None, -2**40])]
        aggs = [Aggregate(asset_id="a", parameter="p", window="1s", window_start=T0 + i * S,
                          window_end=T0 + (i + 1) * S, count=3, min=1.0, max=2.0, mean=1.5,
                          quality=Quality.GOOD, gateway_time=T0) for i in range(3)]
        for topic, objs in (("telemetry.clean", readings), ("telemetry.1s", aggs)):
            tp = type(objs[0])
            expr = row_expression(tp)
            assert expr is not None
            recs = [LogRecord(topic=topic, partition=1, offset=i, key=None,
                              value=codec.encode(topic, o), timestamp_ns=T0 + i)
                    for i, o in enumerate(objs)]
            rows = [codec.row_decoder(topic, r.value, expr, ROW_HELPERS)(r.value, 5)
                    for r in recs]
            fast = table_from_rows(topic, 1, recs, rows, tp)
            assert fast.equals(table(list(zip(recs, objs, strict=True))))
            assert fast.num_rows == len(objs)
            cols = AvroColumns(100).table(topic, 1, recs, tp)
            assert cols is not None and cols.equals(fast)
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_columnar_decode_refuses_what_it_cannot_read_whole(tmp_path):
    """The native reader's table is None (the per-record paths then) for values of two
    writer schemas, a truncated body, a body with a stray byte, or more rows than its
    Arrow batch holds; a part of up to that many rows (20,000, of every union member)
    is read whole."""
    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        topic = "telemetry.clean"
        await codec.prepare([topic])
        objs = [rd(i, value=[1.5, 7, True, "open", None][i % 5]) for i in range(20_000)]
        recs = [LogRecord(topic=topic, partition=0, offset=i, key=None,
                          value=codec.encode(topic, o), timestamp_ns=T0 + i)
                for i, o in enumerate(objs)]
        assert AvroColumns(100).table(topic, 0, recs, Reading) is None  # 8192 rows at most
        reader = AvroColumns(20_000)
        got = reader.table(topic, 0, recs, Reading)
        assert got is not None and got.equals(table(list(zip(recs, objs, strict=True))))

        def with_value(i: int, value: bytes) -> list[LogRecord]:
            return [*recs[:i], msgspec.structs.replace(recs[i], value=value), *recs[i + 1:10]]

        v = recs[3].value
        other_schema = b"\x00\x00\x00\x7f\x7f" + v[5:]
        for bad in (other_schema, v[:-3], v + b"\x02"):
            assert reader.table(topic, 0, with_value(3, bad), Reading) is None
        assert reader.table(topic, 0, recs[:10], Reading) is not None
    finally:
        await lg.close()


STUCK_READER = """
import os, sys, anyio, msgspec
from pathlib import Path
from otgate.actors.log.base import LogRecord, TopicSpec
from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.records import Reading
from otgate.actors.stage_codec import LogCodec
from otgate.sinks.s3 import S3Sink
from otgate.sinks.s3.actor import S3SinkActor
from otgate.sinks.s3 import columnar
from otgate.sinks.s3.columnar import AvroColumns

columnar._SHM = sys.argv[1]  # the file the looping read holds stays in the test's tmp dir

async def main():
    lg = EmbeddedLog(Path(sys.argv[1]) / "log.sqlite")
    await lg.start()
    await lg.ensure_topics([TopicSpec(name="telemetry.clean")])
    codec = LogCodec(EmbeddedSchemaStore(lg))
    await codec.prepare(["telemetry.clean", "dlq.telemetry"])
    values = [codec.encode("telemetry.clean", Reading(asset_id="a", parameter="p", value=i,
                                                      gateway_time=i, seq=i)) for i in range(10)]
    values[9] += b"\\x02"  # a stray byte after the last record
    recs = [LogRecord(topic="telemetry.clean", partition=0, offset=i, key=None, value=v,
                      timestamp_ns=1) for i, v in enumerate(values)]
    cfg = msgspec.convert({"type": "s3", "id": "a", "bucket": "bucket", "endpoint":
                           "http://127.0.0.1:9/s3", "allow_http": True}, S3Sink)
    AvroColumns.TIMEOUT_S = 1.0
    files, dead = await S3SinkActor("sink.a", cfg, lg, codec).prepare(recs)
    print(len(files), len(dead), AvroColumns.stuck, flush=True)
    os._exit(0)  # the reader's thread still loops

anyio.run(main)
"""


def test_a_reader_that_does_not_finish_is_left_behind_for_the_per_record_path(tmp_path):
    """A body with a stray byte after its record can keep the native reader looping:
    the sink gives up on it after its timeout and writes the file per record, the
    record at fault dead-lettered (in a child process, which ends with the looping
    thread)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", STUCK_READER, str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["1", "1", "True"], out.stderr[-2000:]


@pytest.mark.anyio
async def test_files_partitioned_by_topic_date_hour_rolled_by_count_then_committed(
        s3, tmp_path):
    lg, codec = await setup_log(tmp_path, 250)
    try:
        cfg = config(s3)
        sink = S3SinkActor("sink.archive", cfg, lg, codec, gateway_id="gw1")
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)

            async def done() -> bool:
                return sink.delivered == 250

            await wait_until(done)
            tg.cancel_scope.cancel()
        objs = await objects(s3)
        assert offsets(objs) == list(range(250))
        keys = sorted(objs)
        assert len(keys) == 3  # 100 + 100 + 50
        assert keys[0].startswith("site1/telemetry.clean/date=")
        assert "/hour=" in keys[0] and keys[0].endswith(
            "/gw1-p0-00000000000000000000.parquet")
        rows = objs[keys[0]]
        assert rows[7]["seq"] == 7 and rows[7]["asset_id"] == "pump-1"
        c = lg.consumer(cfg.consumer_group, cfg.topics)
        assert await c.fetch(1000, 0.05) == []
        await c.close()
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_file_rolls_by_time_and_undecodable_records_go_to_the_dlq(s3, tmp_path):
    lg, codec = await setup_log(tmp_path, 10)
    try:
        await lg.append("telemetry.clean", [(b"x", b"\x00\x00\x00\x00\x01garbage")])
        cfg = config(s3, batch_size=100_000, batch_wait_s=0.5)
        sink = S3SinkActor("sink.archive", cfg, lg, codec)
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)

            async def first() -> bool:
                return sink.delivered == 11

            await wait_until(first)
            await append(lg, codec, range(11, 20))

            async def second() -> bool:
                return sink.delivered == 20

            await wait_until(second)
            tg.cancel_scope.cancel()
        objs = await objects(s3)
        assert sorted(len(rows) for rows in objs.values()) == [9, 10]  # one file per roll
        assert offsets(objs) == [i for i in range(20) if i != 10]
        (dead,) = await read_all(lg, codec, "dlq.telemetry")
        assert dead.reason == "undecodable" and dead.source_offset == 10
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_store_stopped_and_restarted_loses_and_duplicates_nothing(s3, tmp_path):
    lg, codec = await setup_log(tmp_path, 100)
    try:
        cfg = config(s3, breaker_failures=2)
        sink = S3SinkActor("sink.archive", cfg, lg, codec)
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)

            async def first() -> bool:
                return sink.delivered == 100

            await wait_until(first)
            await anyio.to_thread.run_sync(s3.stop)
            await append(lg, codec, range(100, 350))

            async def opened() -> bool:
                return sink.breaker.breaker_state is BreakerState.OPEN and sink.lag == 250

            await wait_until(opened, 20)
            assert sink.state is State.DEGRADED and sink.delivered == 100
            await anyio.to_thread.run_sync(s3.restart)

            async def recovered() -> bool:
                return sink.delivered == 350 and sink.lag == 0

            await wait_until(recovered, 30)
            tg.cancel_scope.cancel()
        assert offsets(await objects(s3)) == list(range(350))  # lost=0 duplicates=0
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_crash_after_upload_before_commit_replayed_in_other_batches_adds_no_row(
        s3, tmp_path):
    lg, codec = await setup_log(tmp_path, 250)
    try:
        cfg = config(s3, batch_size=100)
        sink = S3SinkActor("sink.archive", cfg, lg, codec)

        async def crash(offsets) -> None:
            raise RuntimeError("killed between upload and commit")

        sink.commit = crash  # the first batch is stored, its commit never happens
        crashed = pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="killed between"),
                                     flatten_subgroups=True)
        with crashed:
            async with anyio.create_task_group() as tg:
                await tg.start(sink.run)
        assert offsets(await objects(s3)) == list(range(100))
        # the restart rolls files at another size: its first file ends sooner (60 < 100)
        sink2 = S3SinkActor("sink.archive", config(s3, batch_size=60), lg, codec)

        async def done() -> bool:
            return sink2.delivered == 250

        async with anyio.create_task_group() as tg:
            await tg.start(sink2.run)
            await wait_until(done)
            tg.cancel_scope.cancel()
        objs = await objects(s3)
        assert offsets(objs) == list(range(250))  # the 100-row object was overwritten
        assert sorted(len(rows) for rows in objs.values()) == [10, 60, 60, 60, 60]
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_crash_mid_upload_leaves_no_partial_object_and_no_gap(s3, tmp_path):
    lg, codec = await setup_log(tmp_path, 60_000)
    try:
        cfg = config(s3, batch_size=20_000, batch_wait_s=0, compression="none")
        sink = S3SinkActor("sink.archive", cfg, lg, codec)
        hit = False
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            with anyio.fail_after(30):
                while not (sink.delivered == 20_000 and sink.client.uploading):
                    await anyio.lowlevel.checkpoint()  # every loop turn: catch the PUT
            hit = sink.client.uploading
            tg.cancel_scope.cancel()  # the crash: the second upload is cut off
        assert hit
        after_crash = await objects(s3)
        assert offsets(after_crash) in (list(range(20_000)), list(range(40_000)))
        sink2 = S3SinkActor("sink.archive", cfg, lg, codec)  # restart: same group

        async def done() -> bool:
            return sink2.lag == 0 and sink2.delivered >= 40_000

        async with anyio.create_task_group() as tg:
            await tg.start(sink2.run)
            await wait_until(done, 60)
            tg.cancel_scope.cancel()
        objs = await objects(s3)
        assert offsets(objs) == list(range(60_000))  # whole files only, no gap, no repeat
        assert len(objs) == 3
    finally:
        await lg.close()
