"""Kafka replication sink against a second tansu broker (the remote): keys, headers,
topic mapping, per-key order, a remote that is away for a while (killed, restarted on
durable storage), the local log embedded and, separately, Kafka (tansu), the DLQ."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import pytest
from aiokafka.helpers import create_ssl_context
from peers.alerts import self_signed
from peers.alocals3 import start_alocals3, tansu_env
from peers.remote_kafka import dedupe, read_remote
from peers.tansu import free_port, start_tansu, tansu_fixture  # noqa: F401
from peers.tls_proxy import TlsProxy
from stage_log import open_log, read_all, wait_until

from otgate.actors.breaker import BreakerState
from otgate.actors.log.base import TopicSpec
from otgate.actors.log.kafka import KafkaLog
from otgate.actors.log.schemas import EmbeddedSchemaStore, RegistrySchemaStore
from otgate.actors.messages import State
from otgate.actors.records import Reading
from otgate.actors.stage_codec import LogCodec
from otgate.sinks.kafka import KafkaSink
from otgate.sinks.kafka.actor import KafkaSinkActor
from otgate.sinks.kafka.client import producer_kwargs

S = 1_000_000_000
T0 = 1_700_000_000 * S
KEYS = ["pump-0", "pump-1", "pump-2", "valve-9"]


def rd(i: int) -> Reading:
    return Reading(asset_id=KEYS[i % 4], parameter="p", value=float(i),
                   device_time=T0 + i * S, gateway_time=T0 + i * S, seq=i)


def config(bootstrap: str, **kw) -> KafkaSink:
    base = dict(type="kafka", id="central", bootstrap_servers=[bootstrap],
                fetch_timeout_s=0.05, batch_size=100, retry_initial_s=0.05, retry_max_s=0.2,
                breaker_cooldown_s=0.5, request_timeout_s=2, topic_prefix="site1.")
    return msgspec.convert({**base, **kw}, KafkaSink)


async def append(lg, codec, topic: str, seqs) -> None:
    await lg.append(topic, [(rd(i).asset_id.encode(), codec.encode(topic, rd(i))) for i in seqs])


def check_order(replicas, n: int, topic: str = "telemetry.clean") -> None:
    """Deduplicated: every source offset once, each key's records in source order."""
    kept = dedupe(replicas)
    assert sorted(int(r.source.rsplit("/", 1)[1]) for r in kept) == list(range(n))
    assert {r.source.rsplit("/", 2)[0] for r in kept} == {topic}
    for key in {r.key for r in kept}:
        offs = [int(r.source.rsplit("/", 1)[1]) for r in kept if r.key == key]
        assert offs == sorted(offs), f"key {key!r} out of order"


def test_config_and_producer_settings():
    cfg = config("h:9092", security_protocol="SASL_SSL", sasl_username="edge",
                 sasl_password="pw", topic_map={"telemetry.clean": "plant.telemetry"})
    kw = producer_kwargs(cfg)
    assert kw["acks"] == "all" and kw["compression_type"] == "zstd"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512" and kw["sasl_plain_password"] == "pw"
    assert kw["security_protocol"] == "SASL_SSL" and kw["ssl_context"] is not None
    assert cfg.remote_topic("telemetry.clean") == "plant.telemetry"
    assert cfg.remote_topic("telemetry.1s") == "site1.telemetry.1s"
    with pytest.raises(msgspec.ValidationError, match="needs sasl_username"):
        config("h:1", security_protocol="SASL_SSL")
    with pytest.raises(msgspec.ValidationError, match="in clear"):
        config("h:1", security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
               sasl_username="u", sasl_password="p")
    from otgate.config.registry import SinkConfig

    got = msgspec.convert({"type": "kafka", "id": "k", "bootstrap_servers": ["h:1"]}, SinkConfig)
    assert isinstance(got, KafkaSink)


async def run_until(sink, cond, deadline_s: float = 20.0) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        await wait_until(cond, deadline_s)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_replicates_keys_values_headers_and_mapped_topics(tansu, tmp_path):
    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        await codec.prepare(["telemetry.clean", "events.clean", "dlq.telemetry"])
        await append(lg, codec, "telemetry.clean", range(250))
        await append(lg, codec, "events.clean", range(5))
        cfg = config(tansu.bootstrap, topics=["telemetry.clean", "events.clean"],
                     topic_map={"events.clean": "plant.events"})
        sink = KafkaSinkActor("sink.central", cfg, lg, codec, gateway_id="gw-1")

        async def done() -> bool:
            return sink.delivered == 255

        await run_until(sink, done)
        got = await read_remote(tansu.bootstrap, "site1.telemetry.clean", 250)
        assert len(got) == 250  # no failure: no repeat
        check_order(got, 250)
        r = next(x for x in got if x.source == "telemetry.clean/0/7")
        assert r.key == b"valve-9" and r.value == codec.encode("telemetry.clean", rd(7))
        assert r.headers["otgate-gateway"] == b"gw-1"
        assert len({x.partition for x in got if x.key == b"pump-1"}) == 1
        events = await read_remote(tansu.bootstrap, "plant.events", 5)
        assert sorted(codec.decode("events.clean", e.value).seq for e in events) == list(range(5))
        c = lg.consumer(cfg.consumer_group, cfg.topics)  # all committed
        assert await c.fetch(1000, 0.05) == []
        await c.close()
    finally:
        await lg.close()


@pytest.mark.anyio
@pytest.mark.slow
async def test_remote_away_for_a_while_loses_nothing_and_keeps_key_order(tmp_path: Path):
    s3 = start_alocals3(tmp_path / "s3")
    remote = start_tansu("s3://tansu/", env=tansu_env(s3), log_path=tmp_path / "tansu.log")
    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        await codec.prepare(["telemetry.clean", "dlq.telemetry"])
        cfg = config(remote.bootstrap, breaker_failures=2)
        sink = KafkaSinkActor("sink.central", cfg, lg, codec, gateway_id="gw-1")
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            await append(lg, codec, "telemetry.clean", range(200))

            async def first() -> bool:
                return sink.delivered == 200

            await wait_until(first, 30)
            remote.kill()  # kill -9: the remote cluster is gone
            await append(lg, codec, "telemetry.clean", range(200, 600))

            async def opened() -> bool:
                return sink.breaker.breaker_state is BreakerState.OPEN and sink.lag == 400

            await wait_until(opened, 30)
            assert sink.state is State.DEGRADED and sink.delivered == 200
            await anyio.to_thread.run_sync(remote.restart)

            async def recovered() -> bool:
                return sink.delivered == 600 and sink.lag == 0

            await wait_until(recovered, 60)
            assert sink.breaker.breaker_state is BreakerState.CLOSED
            tg.cancel_scope.cancel()
        got = await read_remote(remote.bootstrap, "site1.telemetry.clean", 600, 30)
        check_order(got, 600)  # lost=0, duplicates=0 after dedupe by source offset
    finally:
        remote.stop()
        s3.stop()
        await lg.close()


@pytest.mark.anyio
async def test_local_log_on_kafka_replicates_to_a_second_broker(tansu, tmp_path):
    local = start_tansu()
    lg = KafkaLog(local.bootstrap, idempotence=False, linger_ms=1)
    await lg.start()
    try:
        await lg.ensure_topics([TopicSpec(name=t, partitions=2)
                                for t in ("telemetry.clean", "dlq.telemetry")])
        codec = LogCodec(RegistrySchemaStore(None, tmp_path / "schemas.json"))
        await codec.prepare(["telemetry.clean", "dlq.telemetry"])
        await append(lg, codec, "telemetry.clean", range(300))
        cfg = config(tansu.bootstrap)
        sink = KafkaSinkActor("sink.central", cfg, lg, codec, gateway_id="gw-2")

        async def done() -> bool:
            return sink.delivered == 300

        await run_until(sink, done, 30)
        got = dedupe(await read_remote(tansu.bootstrap, "site1.telemetry.clean", 300))
        assert len(got) == 300
        by_source = {r.source: r for r in got}
        assert {s.split("/")[1] for s in by_source} == {"0", "1"}  # both local partitions
        for key in KEYS:  # per key: source offsets of its one local partition, in order
            mine = [r for r in got if r.key == key.encode()]
            assert len({r.source.split("/")[1] for r in mine}) == 1
            offs = [int(r.source.rsplit("/", 1)[1]) for r in mine]
            assert offs == sorted(offs) and len(mine) == 75
    finally:
        await lg.close()
        local.stop()


@pytest.mark.anyio
async def test_record_larger_than_a_producer_batch_goes_to_the_dlq(tansu, tmp_path):
    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        await codec.prepare(["telemetry.clean", "dlq.telemetry"])
        big = msgspec.structs.replace(rd(1), value="x" * 5000)
        await lg.append("telemetry.clean", [(b"pump-0", codec.encode("telemetry.clean", r))
                                            for r in (rd(0), big, rd(2))])
        cfg = config(tansu.bootstrap, max_batch_bytes=2048)
        sink = KafkaSinkActor("sink.central", cfg, lg, codec)

        async def done() -> bool:
            return sink.delivered == 3

        await run_until(sink, done)
        (dead,) = await read_all(lg, codec, "dlq.telemetry")
        assert dead.reason == "rejected_by_destination" and dead.source_offset == 1
        assert "RecordTooLarge" in dead.error and dead.reading.seq == 1
        got = await read_remote(tansu.bootstrap, "site1.telemetry.clean", 2)
        assert [r.source for r in got] == ["telemetry.clean/0/0", "telemetry.clean/0/2"]
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_unreachable_remote_opens_the_breaker_and_commits_nothing(tmp_path):
    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        await codec.prepare(["telemetry.clean", "dlq.telemetry"])
        await append(lg, codec, "telemetry.clean", range(40))
        cfg = config(f"127.0.0.1:{free_port()}", breaker_failures=2, breaker_cooldown_s=30)
        sink = KafkaSinkActor("sink.central", cfg, lg, codec)

        async def opened() -> bool:
            return sink.breaker.breaker_state is BreakerState.OPEN and sink.lag == 40

        await run_until(sink, opened)
        assert "KafkaConnectionError" in sink.last_error
        c = lg.consumer(cfg.consumer_group, cfg.topics)
        assert len(await c.fetch(1000, 0.05)) == 40
        await c.close()
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_replicates_over_tls_verified_with_the_ca_file(tmp_path):
    ca, server_ctx = self_signed(tmp_path)
    proxy = TlsProxy(server_ctx, target_port=0, port=free_port())
    remote = start_tansu(advertised_port=proxy.port)  # metadata points at the TLS front
    proxy.target_port = remote.port
    await proxy.start()
    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        await codec.prepare(["telemetry.clean", "dlq.telemetry"])
        await append(lg, codec, "telemetry.clean", range(50))
        cfg = config(f"127.0.0.1:{proxy.port}", security_protocol="SSL", ca_file=str(ca))
        sink = KafkaSinkActor("sink.central", cfg, lg, codec, gateway_id="gw-1")

        async def done() -> bool:
            return sink.delivered == 50

        await run_until(sink, done)
        assert proxy.tls_clients >= 1
        tls = {"security_protocol": "SSL", "ssl_context": create_ssl_context(cafile=str(ca))}
        check_order(await read_remote(f"127.0.0.1:{proxy.port}", "site1.telemetry.clean", 50,
                                      **tls), 50)
        # a client that does not trust the CA gets nowhere
        untrusted = config(f"127.0.0.1:{proxy.port}", security_protocol="SSL",
                           id="other", breaker_failures=1, breaker_cooldown_s=30)
        other = KafkaSinkActor("sink.other", untrusted, lg, codec)

        async def refused() -> bool:
            return other.breaker.breaker_state is BreakerState.OPEN

        await run_until(other, refused)
        assert other.delivered == 0
    finally:
        await proxy.stop()
        remote.stop()
        await lg.close()


@pytest.mark.anyio
async def test_a_refused_sasl_login_is_named_and_loses_nothing(tmp_path):
    """tansu with --authentication runs the SCRAM exchange and refuses a user it does
    not know (its user store does not survive a restart here, so no login can be
    accepted): the sink says so, opens its breaker and commits nothing."""
    remote = start_tansu(args=("--authentication",))
    lg = await open_log(tmp_path)
    try:
        codec = LogCodec(EmbeddedSchemaStore(lg))
        await codec.prepare(["telemetry.clean", "dlq.telemetry"])
        await append(lg, codec, "telemetry.clean", range(30))
        cfg = config(remote.bootstrap, security_protocol="SASL_PLAINTEXT", sasl_username="edge",
                     sasl_password="not-the-password", breaker_failures=2, breaker_cooldown_s=30)
        sink = KafkaSinkActor("sink.central", cfg, lg, codec)

        async def opened() -> bool:
            return sink.breaker.breaker_state is BreakerState.OPEN and sink.lag == 30

        await run_until(sink, opened)
        assert sink.last_error == (f"LoginRefused: SASL SCRAM-SHA-512 login as 'edge' refused by "
                                   f"{remote.bootstrap} (unknown user or wrong password)")
        assert "not-the-password" not in sink.last_error
        c = lg.consumer(cfg.consumer_group, cfg.topics)
        assert len(await c.fetch(1000, 0.05)) == 30
        await c.close()
    finally:
        remote.stop()
        await lg.close()
