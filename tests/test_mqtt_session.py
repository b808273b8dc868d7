"""MQTT device session against a private Mosquitto broker (tests/peers/mosquitto.py)."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import msgspec
import pytest
from peers.mosquitto import (
    MosquittoPeer,
    make_tls,
    mosquitto_fixture,  # noqa: F401  (registers the fixture)
    start_peer,
)

from otgate.actors.context import BuildContext
from otgate.actors.messages import State
from otgate.actors.records import Classification, Quality, Reading
from otgate.protocols.mqtt import MqttSource
from otgate.protocols.mqtt.session import MqttSession, leaf_error

pytestmark = pytest.mark.anyio


class Collector:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def publish(self, batch: list[Reading]) -> None:
        self.readings.extend(batch)

    def of(self, asset: str, parameter: str) -> list[Reading]:
        return [r for r in self.readings if r.asset_id == asset and r.parameter == parameter]

    def last(self, asset: str, parameter: str) -> Reading | None:
        got = self.of(asset, parameter)
        return got[-1] if got else None


async def wait_until(cond: Callable[[], Any], within: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or cond}")
        await anyio.sleep(0.02)


def make_cfg(peer: MosquittoPeer, **over: Any) -> MqttSource:
    raw: dict[str, Any] = {
        "type": "mqtt",
        "id": "mq1",
        "host": peer.host,
        "port": peer.port,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
        "subscriptions": [
            {
                "topic": "plant/+/telemetry",
                "qos": 1,
                "asset_from_topic": 1,
                "time_path": "ts",
                "time_format": "epoch_ms",
                "fields": [
                    {"path": "temp", "parameter": "temp", "unit": "degC"},
                    {"path": "motor.state", "parameter": "state", "classification": "EVENT"},
                    {
                        "path": "alarms.0",
                        "parameter": "overheat",
                        "type": "bool",
                        "classification": "ALARM",
                    },
                ],
            },
            {
                "topic": "plant/+/raw/+",
                "qos": 0,
                "payload": "plain",
                "asset_from_topic": 1,
                "parameter_from_topic": 3,
            },
        ],
    }
    raw.update(over)
    return msgspec.convert(raw, MqttSource)


def make_session(cfg: MqttSource, sink: Collector, tmp: Path) -> MqttSession:
    actor = cfg.build(BuildContext(gateway_id="gw", publish=sink.publish, state_dir=tmp))
    assert isinstance(actor, MqttSession)
    return actor


async def publish(peer: MosquittoPeer, items: list[tuple[str, bytes | str]], qos: int = 1) -> None:
    async with aiomqtt.Client(peer.host, peer.port) as pub:
        for topic, payload in items:
            await pub.publish(topic, payload, qos=qos)


def doc(temp: Any, state: Any = 1, alarm: Any = False, ts: int = 1_700_000_000_123) -> str:
    return json.dumps({"ts": ts, "temp": temp, "motor": {"state": state}, "alarms": [alarm]})


async def test_json_mapping_wildcards_and_plain_payloads(mosquitto, tmp_path):
    sink = Collector()
    session = make_session(make_cfg(mosquitto), sink, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await wait_until(lambda: session.state is State.RUNNING, what="subscribed")
        await publish(
            mosquitto,
            [
                ("plant/pump1/telemetry", doc(21.5)),
                ("plant/pump2/telemetry", doc(30, state=2, alarm=True)),
                ("plant/pump1/telemetry", doc(21.7)),  # same state: no new EVENT
                ("plant/pump1/raw/speed", "1450"),
                ("plant/pump1/raw/flow", b" 12.25\n"),
                ("plant/pump1/other", "ignored"),
            ],
        )
        await wait_until(lambda: sink.last("pump1", "flow") is not None, what="flow")
        t1 = sink.of("pump1", "temp")
        assert [r.value for r in t1] == [21.5, 21.7]
        assert all(r.quality is Quality.GOOD and r.unit == "degC" for r in t1)
        assert t1[0].device_time == 1_700_000_000_123_000_000
        assert sink.last("pump2", "temp").value == 30
        assert [r.value for r in sink.of("pump1", "state")] == [1]
        assert sink.last("pump1", "state").classification is Classification.EVENT
        assert sink.last("pump2", "overheat").value is True
        assert sink.last("pump2", "overheat").classification is Classification.ALARM
        assert sink.last("pump1", "speed").value == 1450
        assert sink.last("pump1", "flow").value == 12.25
        assert sink.last("pump1", "flow").device_time is None
        seqs = [r.seq for r in sink.readings]
        assert seqs == list(range(1, len(seqs) + 1))
        assert all(r.adapter_id == "mq1" and r.adapter_version for r in sink.readings)
        assert session.messages_unmapped == 0  # plant/pump1/other matches no filter we hold
        tg.cancel_scope.cancel()


async def test_bad_payloads_mark_points_bad_and_session_keeps_flowing(mosquitto, tmp_path, caplog):
    sink = Collector()
    session = make_session(make_cfg(mosquitto), sink, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await wait_until(lambda: session.state is State.RUNNING, what="subscribed")
        await publish(
            mosquitto,
            [
                ("plant/p1/telemetry", b"{not json"),
                ("plant/p2/telemetry", doc("hot")),  # wrong type for temp
                ("plant/p3/telemetry", json.dumps({"ts": 1})),  # fields missing
                ("plant/p4/telemetry", b"[1, 2]"),  # not an object
                ("plant/p5/raw/speed", "nan"),
                ("plant/p5/raw/flow", b"\xff\xfe garbage"),
                ("plant/p5/raw/level", "12,5"),
                ("plant/ok/telemetry", doc(20.0)),
            ],
        )
        await wait_until(lambda: sink.last("ok", "temp") is not None, what="good message after bad")
        assert sink.last("ok", "temp").quality is Quality.GOOD
        for asset in ("p1", "p3", "p4"):
            for parameter in ("temp", "state", "overheat"):
                r = sink.last(asset, parameter)
                assert r is not None and r.quality is Quality.BAD and r.value is None, (asset, r)
        assert sink.last("p2", "temp").quality is Quality.BAD
        assert sink.last("p2", "state").quality is Quality.GOOD  # other fields still fine
        for parameter in ("speed", "flow", "level"):
            assert sink.last("p5", parameter).quality is Quality.BAD
        assert session.state is State.RUNNING
        assert session.bad_payloads == 7
        assert "mqtt_bad_payload" in caplog.text and "reason=invalid_json" in caplog.text
        tg.cancel_scope.cancel()


async def test_persistent_session_resumes_queued_qos1_messages(mosquitto, tmp_path):
    cfg = make_cfg(mosquitto, client_id="otgate-resume-test", clean_session=False)
    sink = Collector()
    first = make_session(cfg, sink, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        await wait_until(lambda: first.state is State.RUNNING, what="first session")
        tg.cancel_scope.cancel()
    # The gateway is away: the broker queues QoS 1 messages for its session.
    await publish(mosquitto, [(f"plant/q{i}/telemetry", doc(float(i))) for i in range(20)])
    second = make_session(cfg, sink, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(second.run)
        await wait_until(
            lambda: all(sink.last(f"q{i}", "temp") for i in range(20)), what="queued messages"
        )
        tg.cancel_scope.cancel()
    assert [sink.last(f"q{i}", "temp").value for i in range(20)] == [float(i) for i in range(20)]


async def test_clean_session_does_not_get_offline_messages(mosquitto, tmp_path):
    cfg = make_cfg(mosquitto, client_id="otgate-clean-test", clean_session=True)
    sink = Collector()
    for round_ in range(2):
        session = make_session(cfg, sink, tmp_path)
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            await wait_until(lambda s=session: s.state is State.RUNNING, what="session")
            if round_ == 1:
                await publish(mosquitto, [("plant/live/telemetry", doc(1.0))])
                await wait_until(lambda: sink.last("live", "temp") is not None, what="live")
            tg.cancel_scope.cancel()
        if round_ == 0:
            await publish(mosquitto, [("plant/offline/telemetry", doc(9.0))])
    assert sink.last("offline", "temp") is None


async def test_reconnects_after_broker_restart(mosquitto, tmp_path):
    sink = Collector()
    session = make_session(make_cfg(mosquitto), sink, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await wait_until(lambda: session.state is State.RUNNING, what="subscribed")
        await publish(mosquitto, [("plant/a/telemetry", doc(1.0))])
        await wait_until(lambda: sink.last("a", "temp") is not None, what="before restart")

        mosquitto.kill()
        await wait_until(lambda: session.state is State.DEGRADED, what="DEGRADED")
        mosquitto.start()  # same port, empty broker (persistence false)
        await wait_until(lambda: session.state is State.RUNNING, within=15, what="RUNNING again")
        await publish(mosquitto, [("plant/a/telemetry", doc(2.0))])
        await wait_until(lambda: sink.last("a", "temp").value == 2.0, what="after restart")
        assert session.connects == 2 and session.connections_lost == 1
        tg.cancel_scope.cancel()


async def test_username_password(tmp_path):
    peer = start_peer(tmp_path, users={"gw": "pa55"})
    try:
        sink = Collector()
        good = make_session(make_cfg(peer, username="gw", password="pa55"), sink, tmp_path)
        async with anyio.create_task_group() as tg:
            await tg.start(good.run)
            await wait_until(lambda: good.state is State.RUNNING, what="authenticated")
            tg.cancel_scope.cancel()

        bad = make_session(make_cfg(peer, username="gw", password="nope"), Collector(), tmp_path)
        with pytest.raises(BaseException) as info:
            with anyio.fail_after(10):
                await bad.run()
        assert isinstance(leaf_error(info.value), aiomqtt.MqttCodeError)
        assert bad.state is State.FAILED
    finally:
        peer.stop()


async def test_tls_with_ca_verification(tmp_path):
    tls = make_tls(tmp_path)
    peer = start_peer(tmp_path, tls=tls)
    try:
        sink = Collector()
        session = make_session(make_cfg(peer, tls={"ca_file": tls["ca"]}), sink, tmp_path)
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            await wait_until(lambda: session.state is State.RUNNING, what="TLS session")
            tls_ctx = ssl.create_default_context(cafile=tls["ca"])
            async with aiomqtt.Client(peer.host, peer.port, tls_context=tls_ctx) as pub:
                await pub.publish("plant/secure/telemetry", doc(5.0), qos=1)
            await wait_until(lambda: sink.last("secure", "temp") is not None, what="over TLS")
            tg.cancel_scope.cancel()
        plain = make_session(
            make_cfg(peer, client_id="otgate-plain", connect_timeout_s=0.5), Collector(), tmp_path
        )
        async with anyio.create_task_group() as tg:
            await tg.start(plain.run)
            await wait_until(lambda: plain.connect_failures >= 2, what="plain TCP refused")
            assert plain.state is State.DEGRADED
            tg.cancel_scope.cancel()
    finally:
        peer.stop()


@pytest.mark.parametrize("ack", ["after_log", "on_receipt"])
async def test_qos1_messages_not_in_the_log_are_redelivered_after_a_crash(mosquitto, tmp_path, ack):
    cfg = make_cfg(mosquitto, client_id=f"otgate-ack-{ack}", ack=ack)
    stuck = anyio.Event()

    async def log_never_accepts(batch: list[Reading]) -> None:
        stuck.set()
        await anyio.sleep_forever()

    first = cfg.build(BuildContext(gateway_id="gw", publish=log_never_accepts, state_dir=tmp_path))
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        await wait_until(lambda: first.state is State.RUNNING, what="first session")
        await publish(mosquitto, [(f"plant/c{i}/telemetry", doc(float(i))) for i in range(5)])
        with anyio.fail_after(10):
            await stuck.wait()
        tg.cancel_scope.cancel()  # the gateway dies before the log took the readings

    sink = Collector()
    second = make_session(cfg, sink, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(second.run)
        await wait_until(lambda: second.state is State.RUNNING, what="second session")
        await publish(mosquitto, [("plant/marker/telemetry", doc(0.0))])
        await wait_until(lambda: sink.last("marker", "temp") is not None, what="marker")
        tg.cancel_scope.cancel()
    redelivered = [i for i in range(5) if sink.last(f"c{i}", "temp") is not None]
    if ack == "after_log":
        assert redelivered == [0, 1, 2, 3, 4]
    else:  # acknowledged on receipt: the broker forgot them, they are lost
        assert redelivered == []
