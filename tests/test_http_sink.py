"""HTTP sink against a real aiohttp endpoint: gzip JSON/NDJSON, auth, TLS, outage,
throttling (Retry-After), a lost reply (same Idempotency-Key), 4xx to the DLQ."""

from __future__ import annotations

import base64
import gzip
import time

import aiohttp
import anyio
import msgspec
import pytest
from peers.alerts import self_signed
from peers.ingest import Ingest
from peers.tansu import free_port
from stage_log import open_log, read_all, wait_until

from otgate.actors.breaker import BreakerState
from otgate.actors.log.base import LogRecord
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.messages import State
from otgate.actors.records import Reading
from otgate.actors.stage_codec import LogCodec
from otgate.sinks.http import HttpSink
from otgate.sinks.http.actor import HttpSinkActor
from otgate.sinks.http.client import HttpError, is_retriable, parse_retry_after

S = 1_000_000_000
T0 = 1_700_000_000 * S


def rd(i: int) -> Reading:
    return Reading(asset_id=f"pump-{i % 3}", parameter="temp", value=float(i),
                   device_time=T0 + i * S, gateway_time=T0 + i * S + 1, seq=i)


def config(url: str, **kw) -> HttpSink:
    base = dict(type="http", id="cloud", url=url, fetch_timeout_s=0.05, batch_wait_s=0.05,
                retry_initial_s=0.02, retry_max_s=0.2, breaker_cooldown_s=0.3)
    return msgspec.convert({**base, **kw}, HttpSink)


async def setup_log(tmp_path, n: int):
    lg = await open_log(tmp_path)
    codec = LogCodec(EmbeddedSchemaStore(lg))
    await codec.prepare(["telemetry.clean", "dlq.telemetry"])
    await append(lg, codec, range(n))
    return lg, codec


async def append(lg, codec, seqs) -> None:
    await lg.append("telemetry.clean",
                    [(rd(i).asset_id.encode(), codec.encode("telemetry.clean", rd(i)))
                     for i in seqs])


async def committed(lg, cfg) -> int:
    """Records the group has not committed yet."""
    c = lg.consumer(cfg.consumer_group, cfg.topics)
    try:
        return len(await c.fetch(100_000, 0.05))
    finally:
        await c.close()


def seqs(records: list[dict]) -> list[int]:
    return [r["record"]["seq"] if "record" in r else r["seq"] for r in records]


def test_config_checks_and_redaction():
    cfg = config("https://user:pw@cloud.example:8443/v1/ingest?token=abc", bearer_token="t")
    assert cfg.redacted_url() == "https://cloud.example:8443"
    assert cfg.consumer_group == "sink.cloud"
    with pytest.raises(msgspec.ValidationError, match="choose one"):
        config("http://x/", bearer_token="t", username="u", password="p")
    with pytest.raises(msgspec.ValidationError, match="go together"):
        config("http://x/", username="u")
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        config("http://x/", gzipp=True)
    from otgate.config.registry import SinkConfig

    assert isinstance(msgspec.convert({"type": "http", "id": "c", "url": "http://x/"},
                                      SinkConfig), HttpSink)


def test_retry_after_and_whitelist():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") == 0.0 and parse_retry_after(None) == 0.0
    assert is_retriable(HttpError("HTTP 503", retriable=True))
    assert not is_retriable(HttpError("HTTP 422", retriable=False))
    assert is_retriable(aiohttp.ServerDisconnectedError()) and is_retriable(TimeoutError())
    assert not is_retriable(ValueError("x"))


async def run_until(sink, cond, deadline_s: float = 15.0) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        await wait_until(cond, deadline_s)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_decode_batch_takes_the_compiled_decoder_and_refuses_bad_values(tmp_path):
    """The fast path (one decoder per run of a header) decodes what ``decode`` does;
    a bad magic byte, a short or truncated value between good ones is dead-lettered
    and the good ones after it are decoded again."""
    lg, codec = await setup_log(tmp_path, 0)
    try:
        good = [codec.encode("telemetry.clean", rd(i)) for i in range(6)]
        values = [good[0], good[1], b"\x01" + good[2][1:], good[2], b"\x00\x00", good[3][:-3],
                  good[3], b"", good[4], good[5] + b"\x00", good[5]]
        batch = [LogRecord(topic="telemetry.clean", partition=0, offset=i, key=None, value=v,
                           timestamp_ns=T0) for i, v in enumerate(values)]
        sink = HttpSinkActor("sink.cloud", config("http://127.0.0.1:1/x"), lg, codec)
        items, dead = await sink.decode_batch(batch)
        assert [obj for _, obj in items] == [rd(i) for i in (0, 1, 2, 3, 4, 5)]
        assert [rec.offset for rec, _ in items] == [0, 1, 3, 6, 8, 10]
        assert [d.source_offset for d in dead] == [2, 4, 5, 7, 9]
        assert {d.reason for d in dead} == {"undecodable"}
    finally:
        await lg.close()


def test_gzip_levels_isal_and_zlib_give_the_same_body():
    """Levels 1-3 (ISA-L) and 4-9 (zlib) all unzip to the same JSON; a body built
    again is the same bytes (no time stamp)."""
    items = [(LogRecord(topic="telemetry.clean", partition=0, offset=i, key=b"pump-1",
                        value=b"", timestamp_ns=T0), rd(i)) for i in range(50)]
    bodies = {}
    for level in (1, 2, 3, 6, 9):
        sink = HttpSinkActor("sink.cloud", config("http://127.0.0.1:1/x", gzip_level=level),
                             None, None, gateway_id="gw")
        bodies[level] = sink.body("k", items)
        assert sink.body("k", items) == bodies[level]
    raw = msgspec.json.decode(gzip.decompress(bodies[1]))
    assert raw["records"][7]["record"] == msgspec.to_builtins(rd(7))
    assert all(gzip.decompress(b) == gzip.decompress(bodies[1]) for b in bodies.values())
    assert len(bodies[1]) < len(msgspec.json.encode(raw)) / 4


@pytest.mark.anyio
async def test_gzip_json_batches_with_bearer_token_then_commit(tmp_path):
    ingest = Ingest(auth="Bearer s3cret-token")
    await ingest.start()
    lg, codec = await setup_log(tmp_path, 500)
    try:
        cfg = config(ingest.url, bearer_token="s3cret-token", batch_size=200)
        sink = HttpSinkActor("sink.cloud", cfg, lg, codec, gateway_id="gw-7")

        async def done() -> bool:
            return sink.delivered == 500

        await run_until(sink, done)
        got = ingest.unique_records()
        assert seqs(got) == list(range(500)) and len(ingest.batches) == 3
        assert got[4] == {"topic": "telemetry.clean", "partition": 0, "offset": 4,
                          "key": "pump-1", "record": msgspec.to_builtins(rd(4))}
        assert ingest.encodings == {"gzip"} and ingest.content_types == {"application/json"}
        assert await committed(lg, cfg) == 0
        m = sink.metrics()
        assert m["requests_total"] == 3 and m["rejected_total"] == 0
        assert "s3cret" not in repr(sink.snapshot())
    finally:
        await ingest.stop()
        await lg.close()


@pytest.mark.anyio
async def test_ndjson_over_tls_with_basic_auth(tmp_path):
    ca, server_ctx = self_signed(tmp_path)
    basic = "Basic " + base64.b64encode(b"edge:pa55").decode()
    ingest = Ingest(auth=basic, ssl_context=server_ctx)
    await ingest.start()
    lg, codec = await setup_log(tmp_path, 120)
    try:
        cfg = config(ingest.url, format="ndjson", gzip=False, username="edge", password="pa55",
                     ca_file=str(ca), batch_size=50)
        sink = HttpSinkActor("sink.cloud", cfg, lg, codec)

        async def done() -> bool:
            return sink.delivered == 120

        await run_until(sink, done)
        assert ingest.url.startswith("https://")
        assert seqs(ingest.unique_records()) == list(range(120))
        assert ingest.content_types == {"application/x-ndjson"} and ingest.encodings == {""}
    finally:
        await ingest.stop()
        await lg.close()


@pytest.mark.anyio
async def test_outage_throttling_and_lost_reply_lose_nothing_and_duplicate_nothing(tmp_path):
    ingest = Ingest(slow_s=1.0)
    await ingest.start()
    lg, codec = await setup_log(tmp_path, 100)
    try:
        cfg = config(ingest.url, batch_size=100, breaker_failures=2, timeout_s=0.5)
        sink = HttpSinkActor("sink.cloud", cfg, lg, codec)
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)

            async def first() -> bool:
                return sink.delivered == 100

            await wait_until(first)
            # the endpoint goes away: connection refused, the breaker opens, lag grows
            await ingest.stop()
            await append(lg, codec, range(100, 300))

            async def opened() -> bool:
                return sink.breaker.breaker_state is BreakerState.OPEN and sink.lag == 200

            await wait_until(opened)
            assert sink.state is State.DEGRADED and sink.delivered == 100
            # back, but: 503, then 429 with Retry-After: 1, then a reply lost to the timeout
            ingest.script.extend([(503, {}), (429, {"Retry-After": "1"}), "slow"])
            await ingest.start()

            async def recovered() -> bool:
                return sink.delivered == 300 and sink.lag == 0

            await wait_until(recovered, 20)
            tg.cancel_scope.cancel()
        statuses = [s for _, _, s in ingest.attempts]
        assert statuses[:4] == [200, 503, 429, 200]
        t429 = next(t for t, _, s in ingest.attempts if s == 429)
        after = [t for t, _, _ in ingest.attempts if t > t429]
        assert after[0] - t429 >= 0.95  # Retry-After respected
        # the batch whose reply timed out was sent again with the same key
        keys = [k for k, _ in ingest.batches]
        assert len(keys) - len(set(keys)) == 1
        got = seqs(ingest.unique_records())
        assert sorted(got) == list(range(300)) and len(got) == 300  # lost=0 duplicates=0
        assert await committed(lg, cfg) == 0
        assert sink.breaker.breaker_state is BreakerState.CLOSED
    finally:
        await ingest.stop()
        await lg.close()


@pytest.mark.anyio
async def test_4xx_is_permanent_and_dead_lettered_but_408_is_retried(tmp_path):
    ingest = Ingest()
    ingest.script.extend([(403, {}), (408, {})])
    await ingest.start()
    lg, codec = await setup_log(tmp_path, 10)
    try:
        cfg = config(ingest.url, batch_size=10)
        sink = HttpSinkActor("sink.cloud", cfg, lg, codec)

        async def refused() -> bool:
            return sink.rejected == 10

        async def done() -> bool:
            return sink.delivered == 20

        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            await wait_until(refused)
            await append(lg, codec, range(10, 20))
            await wait_until(done)
            tg.cancel_scope.cancel()
        dead = await read_all(lg, codec, "dlq.telemetry")
        assert [d.reading.seq for d in dead] == list(range(10))
        assert {d.reason for d in dead} == {"rejected_by_destination"}
        assert dead[3].error.startswith("HTTP 403") and dead[3].source_offset == 3
        assert [s for _, _, s in ingest.attempts] == [403, 408, 200]  # 403: no split
        assert seqs(ingest.unique_records()) == list(range(10, 20))
        assert await committed(lg, cfg) == 0
    finally:
        await ingest.stop()
        await lg.close()


@pytest.mark.anyio
async def test_422_is_split_until_the_refused_records_are_alone(tmp_path):
    ingest = Ingest()
    ingest.refuse_seqs = {5, 13}
    await ingest.start()
    lg, codec = await setup_log(tmp_path, 16)
    try:
        cfg = config(ingest.url, batch_size=16)
        sink = HttpSinkActor("sink.cloud", cfg, lg, codec)

        async def done() -> bool:
            return sink.delivered == 16

        await run_until(sink, done)
        assert sorted(seqs(ingest.unique_records())) == [i for i in range(16) if i not in (5, 13)]
        dead = await read_all(lg, codec, "dlq.telemetry")
        assert sorted(d.reading.seq for d in dead) == [5, 13]
        assert all(d.error.startswith("HTTP 422") for d in dead)
        assert len(ingest.attempts) == 15  # 16, 8+8, 4x4, then 2x4 and 1x4 around the two
        assert await committed(lg, cfg) == 0
    finally:
        await ingest.stop()
        await lg.close()


@pytest.mark.anyio
async def test_unreachable_endpoint_keeps_everything_uncommitted(tmp_path):
    lg, codec = await setup_log(tmp_path, 30)
    try:
        cfg = config(f"http://127.0.0.1:{free_port()}/ingest", breaker_failures=2,
                     breaker_cooldown_s=30)
        sink = HttpSinkActor("sink.cloud", cfg, lg, codec)
        t0 = time.monotonic()

        async def opened() -> bool:
            return sink.breaker.breaker_state is BreakerState.OPEN and sink.lag == 30

        await run_until(sink, opened)
        assert time.monotonic() - t0 < 10
        assert "ClientConnectorError" in sink.last_error
        assert await committed(lg, cfg) == 30
    finally:
        await lg.close()
