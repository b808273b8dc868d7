"""The MQTT publisher simulator and private broker, read by the MQTT device session."""

from __future__ import annotations

import anyio
import msgspec
import pytest
from test_mqtt_session import Collector, wait_until

from otgate.actors.context import BuildContext
from otgate.actors.messages import State
from otgate.actors.records import Quality
from otgate.protocols.mqtt import MqttSource
from otgate.simulations.mqtt_sim import (
    MqttBrokerConfig,
    MqttPublisher,
    MqttSimConfig,
    find_mosquitto,
    run_mqtt_broker,
    run_mqtt_publisher,
)

pytestmark = pytest.mark.anyio


def publisher_cfg(port: int, **faults: object) -> MqttSimConfig:
    return msgspec.convert(
        {
            "port": port,
            "interval_s": 0.02,
            "faults": faults,
            "topics": [
                {
                    "topic": "plant/{asset}/telemetry",
                    "assets": ["pump1", "pump2"],
                    "qos": 1,
                    "fields": [
                        {"path": "temp", "signal": {"kind": "sine", "offset": 20, "amplitude": 2}},
                        {
                            "path": "motor.state",
                            "type": "int",
                            "signal": {"kind": "states", "states": [0, 1], "mean_dwell_s": 0.1},
                        },
                    ],
                },
                {
                    "topic": "plant/pump1/raw/flow",
                    "payload": "plain",
                    "signal": {"kind": "ramp", "rate_per_s": 1.0},
                },
            ],
        },
        MqttSimConfig,
    )


def session_cfg(port: int) -> MqttSource:
    return msgspec.convert(
        {
            "type": "mqtt",
            "id": "simmq",
            "port": port,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            "subscriptions": [
                {
                    "topic": "plant/+/telemetry",
                    "asset_from_topic": 1,
                    "time_path": "ts",
                    "fields": [
                        {"path": "temp", "parameter": "temp"},
                        {"path": "motor.state", "parameter": "state", "classification": "EVENT"},
                    ],
                },
                {
                    "topic": "plant/+/raw/+",
                    "payload": "plain",
                    "qos": 0,
                    "asset_from_topic": 1,
                    "parameter_from_topic": 3,
                },
            ],
        },
        MqttSource,
    )


@pytest.fixture
def mosquitto_binary() -> str:
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto not installed")
    return binary


async def test_publisher_with_garbage_and_disconnect_faults(tmp_path, mosquitto_binary):
    sink = Collector()
    pubs: list[MqttPublisher] = []
    async with anyio.create_task_group() as tg:
        port = await tg.start(run_mqtt_broker, MqttBrokerConfig(binary=mosquitto_binary))
        session = session_cfg(port).build(
            BuildContext(gateway_id="gw", publish=sink.publish, state_dir=tmp_path)
        )
        await tg.start(session.run)
        await wait_until(lambda: session.state is State.RUNNING, what="session up")
        cfg = publisher_cfg(
            port, garbage_probability=0.2, disconnect_every_s=0.3, disconnect_down_s=0.1
        )
        url = await tg.start(
            lambda task_status: run_mqtt_publisher(cfg, task_status=task_status, handle=pubs)
        )
        assert url == f"mqtt://127.0.0.1:{port}"
        await wait_until(
            lambda: pubs[0].disconnects >= 2 and pubs[0].garbage >= 5,
            within=15,
            what="faults injected",
        )
        n = len(sink.readings)
        await wait_until(lambda: len(sink.readings) > n + 20, what="still flowing")
        good = [r for r in sink.of("pump2", "temp") if r.quality is Quality.GOOD]
        assert good and all(17.5 <= r.value <= 22.5 and r.device_time for r in good)
        assert any(r.quality is Quality.BAD for r in sink.readings)
        flows = [r.value for r in sink.of("pump1", "flow") if r.quality is Quality.GOOD]
        assert flows == sorted(flows)
        assert session.state is State.RUNNING and session.bad_payloads > 0
        tg.cancel_scope.cancel()
