"""Device → raw log: a Modbus TCP session publishing through the gateway's
``ReadingPublisher`` onto the embedded log, read back and decoded."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import pytest
from peers.modbus import modbus_server_fixture  # noqa: F401

from otgate.actors.context import BuildContext
from otgate.actors.log.config import LogConfig
from otgate.actors.log.open import decoder, open_log, open_publisher
from otgate.actors.records import Classification, Quality, Reading
from otgate.protocols.modbus.config import Table
from otgate.protocols.modbus_tcp import ModbusTcpAdapter

pytestmark = pytest.mark.anyio


async def _read_topic(log, dec, topic: str) -> list[Reading]:
    out: list[Reading] = []
    for partition, (start, end) in (await log.watermarks(topic)).items():
        for rec in await log.read(topic, partition, start, end - start):
            out.append(await dec.decode_async(topic, rec.value))
    return out


async def test_readings_land_on_raw_topics_by_classification(modbus_server, tmp_path: Path):
    store = modbus_server.store
    store.set_registers(1, Table.HOLDING, 0, [215, 1, 0b10])
    cfg = msgspec.convert(
        {
            "type": "modbus_tcp", "id": "plc-log", "host": "127.0.0.1",
            "port": modbus_server.port, "poll_interval": 0.02,
            "groups": [{"unit_id": 1, "asset_id": "kiln", "points": [
                {"parameter": "temp", "address": 0, "type": "int16", "scale": 0.1,
                 "unit": "degC"},
                {"parameter": "state", "address": 1, "classification": "EVENT"},
                {"parameter": "trip", "address": 2, "type": "bit", "bit": 1,
                 "classification": "ALARM"},
            ]}],
        },
        ModbusTcpAdapter,
    )
    log_cfg = LogConfig()
    log = await open_log(log_cfg, tmp_path)
    try:
        pub = await open_publisher(log_cfg, tmp_path, log)
        events_sent: list = []

        async def publish(readings: list[Reading]) -> None:
            await pub.publish(readings)  # returns once durable
            events_sent.extend(r.value for r in readings if r.parameter == "state")

        session = cfg.build(BuildContext(gateway_id="gw", publish=publish,
                                         state_dir=tmp_path, log=log))
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            with anyio.fail_after(10):
                while pub.published < 10:
                    await anyio.sleep(0.01)
            store.set_registers(1, Table.HOLDING, 1, [2, 0])
            with anyio.fail_after(10):
                while 2 not in events_sent:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        dec = decoder(log_cfg, tmp_path, log)
        telemetry = await _read_topic(log, dec, "telemetry.raw")
        events = await _read_topic(log, dec, "events.raw")
        alarms = await _read_topic(log, dec, "alarms.raw")
    finally:
        await log.close()
    assert len(telemetry) >= 8  # 10+ published, 2 of them the first event and alarm
    assert {(r.asset_id, r.parameter, r.unit) for r in telemetry} == {("kiln", "temp", "degC")}
    assert all(r.value == pytest.approx(21.5) and r.quality is Quality.GOOD for r in telemetry)
    assert [r.value for r in events] == [1, 2]
    assert [r.value for r in alarms] == [True, False]
    assert alarms[0].classification is Classification.ALARM
    everything = sorted(telemetry + events + alarms, key=lambda r: r.seq)
    assert [r.seq for r in everything] == list(range(1, len(everything) + 1))  # no gap, no dup
    assert all(r.adapter_id == "plc-log" and r.device_time is None for r in everything)
