"""MQTT bench: 10 topics of JSON payloads (10 values each) through a private Mosquitto.

A child process publishes as fast as it can (aiomqtt, round-robin over 10
topics, one JSON object with 10 numeric fields per message), so neither its
CPU nor the broker's counts as the gateway's. Numbers from one run, per QoS:

1. ceiling: a bare aiomqtt subscriber counting messages (no decoding):
   points/s (= messages x 10) and µs of process CPU per point;
2. gateway: one ``MqttSession`` mapping every field to a Reading, ``publish``
   only counting: points/s and µs of gateway-process CPU per point (paho +
   aiomqtt + otgate's JSON mapping + Reading);
3. otgate's own per-point cost alone (message → Readings, no I/O).

Numbers, not pass/fail. Goal from the issue: ≤ 5 µs gateway CPU per point.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import anyio.lowlevel
import msgspec

from otgate.simulations.bench_rows import ceiling_and_gateway, decode_only

TITLE = "protocols: MQTT session against a publisher through Mosquitto"

TOPICS = 10
FIELDS = 10


def payload(i: int) -> bytes:
    doc = {"ts": time.time_ns() // 1_000_000}
    doc.update({f"v{k}": i * 0.5 + k for k in range(FIELDS)})
    return json.dumps(doc).encode()


def source(port: int, qos: int) -> Any:
    from otgate.protocols.mqtt import MqttSource

    return msgspec.convert(
        {
            "type": "mqtt",
            "id": "bench",
            "port": port,
            "client_id": f"otgate-bench-q{qos}",
            "clean_session": True,
            "subscriptions": [
                {
                    "topic": "bench/+/data",
                    "qos": qos,
                    "asset_from_topic": 1,
                    "time_path": "ts",
                    "fields": [{"path": f"v{k}", "parameter": f"v{k}"} for k in range(FIELDS)],
                }
            ],
        },
        MqttSource,
    )


async def _publisher(port: int, qos: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="otgate-bench-pub") as client:
        i = 0
        while True:
            await client.publish(f"bench/dev{i % TOPICS}/data", payload(i), qos=qos)
            i += 1
            if i % 200 == 0:
                await anyio.lowlevel.checkpoint()


async def _start_publisher(port: int, qos: int) -> Any:
    return await anyio.open_process(
        [sys.executable, "-m", "otgate.simulations.bench_mqtt", "--publish", str(port), str(qos)],
        stdout=None,
        stderr=None,
    )


async def _stop(proc: Any) -> None:
    proc.terminate()
    with anyio.move_on_after(5):
        await proc.wait()
    if proc.returncode is None:
        proc.kill()


async def _ceiling(port: int, qos: int, seconds: float) -> tuple[float, float]:
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"otgate-bench-bare-q{qos}") as c:
        await c.subscribe("bench/+/data", qos=qos)
        count = 0
        t_end = None
        t0 = c0 = 0.0
        async for _message in c.messages:
            count += 1
            if t_end is None:
                if count == 1000:  # warm-up
                    t0, c0, count = time.monotonic(), time.process_time(), 0
                    t_end = t0 + seconds
                continue
            if count % 256 == 0 and time.monotonic() >= t_end:
                break
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
    points = count * FIELDS
    return points / wall, cpu / points * 1e6 if points else 0.0


async def _gateway(port: int, qos: int, seconds: float) -> tuple[float, float, dict[str, float]]:
    from otgate.actors.context import BuildContext

    counted = [0]

    async def publish(batch: list[Any]) -> None:
        counted[0] += len(batch)

    session = source(port, qos).build(
        BuildContext(gateway_id="bench", publish=publish, state_dir=Path("."))
    )
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        with anyio.fail_after(30):
            while counted[0] < 1000 * FIELDS:
                await anyio.sleep(0.05)
        n0, t0, c0 = counted[0], time.monotonic(), time.process_time()
        await anyio.sleep(seconds)
        n, wall, cpu = counted[0] - n0, time.monotonic() - t0, time.process_time() - c0
        tg.cancel_scope.cancel()
    return n / wall, cpu / n * 1e6 if n else 0.0, session.metrics()


def _decode_cost(n_messages: int) -> float:
    """µs per point for message → Readings inside the session, no I/O."""
    from otgate.actors.context import BuildContext
    from otgate.protocols.mqtt.session import MqttSession

    async def publish(batch: list[Any]) -> None:
        return None

    session = source(1883, 0).build(
        BuildContext(gateway_id="bench", publish=publish, state_dir=Path("."))
    )
    assert isinstance(session, MqttSession)
    messages = [
        aiomqtt.Message(f"bench/dev{i % TOPICS}/data", payload(i), 0, False, 0, None)
        for i in range(100)
    ]
    handle, emitter = session._handle, session.emitter
    done = 0
    c0 = time.process_time()
    while done < n_messages:
        for m in messages:
            handle(m)
        done += len(messages)
        emitter.pending.clear()
    return (time.process_time() - c0) / (done * FIELDS) * 1e6


async def run(report: Any, args: argparse.Namespace) -> None:
    """Run the MQTT bench and add its rows to ``report``."""
    from otgate.simulations.mqtt_sim import MqttBrokerConfig, find_mosquitto, run_mqtt_broker

    quick = getattr(args, "quick", False)
    seconds = 2.0 if quick else 5.0
    qos_levels = (0,) if quick else (0, 1)
    if find_mosquitto() is None:
        report.progress("mqtt: mosquitto not installed (apt-get install -y mosquitto), skipped")
        return
    async with anyio.create_task_group() as tg:
        port = await tg.start(run_mqtt_broker, MqttBrokerConfig())
        report.progress(f"mqtt: private mosquitto on 127.0.0.1:{port}")
        for qos in qos_levels:
            scenario = f"{TOPICS} topics x {FIELDS} fields JSON, QoS {qos}"
            proc = await _start_publisher(port, qos)
            try:
                report.progress(f"mqtt: QoS {qos}: bare aiomqtt subscriber, {seconds:.0f} s")
                ceil_pps, ceil_cpu = await _ceiling(port, qos, seconds)
                report.progress(f"mqtt: ceiling {ceil_pps:,.0f} points/s, {ceil_cpu:.2f} us/pt")
                report.progress(f"mqtt: QoS {qos}: gateway session, {seconds:.0f} s")
                gw_pps, gw_cpu, totals = await _gateway(port, qos, seconds)
                report.progress(f"mqtt: gateway {gw_pps:,.0f} points/s, {gw_cpu:.2f} us/pt")
            finally:
                await _stop(proc)
            ceiling_and_gateway(
                report, "mqtt", scenario,
                ("bare aiomqtt subscriber (ceiling)", ceil_pps, ceil_cpu),
                ("gateway session -> counting publish", gw_pps, gw_cpu),
                "<= 5 us/pt",
            )
            report.progress(
                f"mqtt: messages={totals.get('messages', 0):.0f} "
                f"bad_payloads={totals.get('bad_payloads', 0):.0f}"
            )
        tg.cancel_scope.cancel()
    decode_us = _decode_cost(2_000 if quick else 20_000)
    decode_only(report, "mqtt", "otgate JSON message -> Readings only (no I/O)", decode_us)


def main() -> None:
    """``python -m otgate.simulations.bench_mqtt --publish PORT QOS``: the bench's publisher."""
    p = argparse.ArgumentParser()
    p.add_argument("--publish", nargs=2, type=int, required=True, metavar=("PORT", "QOS"))
    port, qos = p.parse_args().publish
    anyio.run(_publisher, port, qos)


if __name__ == "__main__":
    main()
