"""Run a scenario: PostgreSQL, an MQTT broker, counting devices, a real
``otgate run``, the fault timeline; then drain and check."""

from __future__ import annotations

import os
import re
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from otgate.actors.log.config import LogConfig
from otgate.simulations.gateway_process import GatewayProcess
from otgate.simulations.harness.alarm_check import AlarmReport
from otgate.simulations.harness.alarm_run import AlarmParts, alarms_toml
from otgate.simulations.harness.broker import broker_kill, local_broker, log_config, log_toml
from otgate.simulations.harness.checker import Stream, read_from_log, read_from_postgres, settled
from otgate.simulations.harness.devices import ModbusCounter, MqttCounter, mqtt_adapter_toml
from otgate.simulations.harness.disk import (
    DiskUnavailable,
    DiskWatch,
    check_disk,
    fill_through,
    small_filesystem,
)
from otgate.simulations.harness.load import landed, load_toml
from otgate.simulations.harness.reload_storm import reload_storm
from otgate.simulations.harness.resources import Samples, sample_every
from otgate.simulations.harness.scenario import Devices, Fault, FaultKind, Scenario
from otgate.simulations.kafka_broker import BrokerUnavailable, DurableBroker
from otgate.simulations.modbus_sim import Faults
from otgate.simulations.mqtt_sim import MqttBrokerConfig, run_mqtt_broker
from otgate.simulations.postgres_server import PostgresServer, start_on_loop
from otgate.simulations.report import Report

_URL = re.compile(r"status_listening url=(http://\S+?)\"")
TABLE = "public.otgate_readings"
_TIMED = {
    FaultKind.DEVICE_REBOOT,
    FaultKind.GARBAGE_FRAMES,
    FaultKind.POSTGRES_STOP,
    FaultKind.GATEWAY_KILL,
    FaultKind.RELOAD_STORM,
    FaultKind.DISK_FILL,
    FaultKind.BROKER_KILL,
    FaultKind.WEBHOOK_DOWN,
    FaultKind.WEBHOOK_FAIL,
    FaultKind.WEBHOOK_SLOW,
}


def gateway_toml(
    sc: Scenario,
    state_dir: Path,
    token: str,
    broker_port: int,
    modbus: list[ModbusCounter],
    dsn: str,
    hook_url: str = "",
) -> str:
    d = sc.devices
    out = [
        f"""
[gateway]
id = "harness-{sc.name}"
state_dir = "{state_dir}"
fault_injection = true
shutdown_timeout = 5.0
[status]
tokens = [{{ token = "{token}", role = "admin" }}]
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 2.0
gateway = {{ intensity = 50, period = 60.0, on_exhausted = "fail_child", backoff_initial = 0.05 }}
[processing.validator]
[processing.aggregator]
enabled = {str(sc.aggregator).lower()}
[[sinks]]
type = "postgres"
id = "pg"
dsn = "{dsn}"
topics = ["telemetry.clean"{', "telemetry.1s"' if sc.aggregator else ""}]
breaker_cooldown_s = 1.0
"""
    ]
    if sc.disk_mib is not None:
        out.append("""
[log.disk_tiers]
check_interval_s = 0.5
""")
    if d.mqtt:
        alarm = (
            ', { path = "seq", parameter = "seq_alarm", classification = "ALARM" }'
            if sc.disk_mib is not None
            else ""
        )
        fields = '{ path = "seq", parameter = "seq" }' + alarm
        out.append(mqtt_adapter_toml("mqtt-devices", "harness-gateway", broker_port, "seq", fields))
    for dev in modbus:
        out.append(f"""
[[adapters]]
type = "modbus_tcp"
id = "{dev.id}"
host = "127.0.0.1"
port = {dev.port}
poll_interval = {d.modbus_poll_s}
timeout = {d.modbus_timeout_s}
[[adapters.groups]]
unit_id = 1
asset_id = "{dev.id}"
points = [{{ parameter = "counter", address = 1, type = "uint32" }}]
""")
    if sc.alarms is not None:
        out.append(alarms_toml(sc.alarms, broker_port, hook_url))
    out.append(load_toml(sc))
    return "".join(out)


async def _apply(
    fault: Fault,
    t0: float,
    gw: GatewayProcess,
    pg: PostgresServer,
    modbus: dict[str, ModbusCounter],
    report: Report,
    token: str,
    outcome: Outcome,
    state_dir: Path,
    broker: DurableBroker | None = None,
    alarms: AlarmParts | None = None,
) -> None:
    await anyio.sleep(max(0.0, t0 + fault.at_s - time.monotonic()))
    k_timed = fault.kind in _TIMED
    report.progress(
        f"fault {fault.kind.value} {fault.target}"
        + (f" for {fault.duration_s:g}s" if k_timed else "")
    )
    k = fault.kind
    if k.value.startswith("webhook_"):
        assert alarms is not None
        await alarms.fault(fault)
    elif k is FaultKind.KILL_BULKHEAD:
        node = await anyio.to_thread.run_sync(gw.component, fault.target)
        if node["pid"] is None:
            report.progress(f"fault skipped: {fault.target} has no process ({node['state']})")
            return
        os.kill(node["pid"], signal.SIGKILL)
        if alarms is not None:
            alarms.killed(fault)
    elif k is FaultKind.HANG_BULKHEAD:
        body = {"kind": "hang", "bulkhead": fault.target}
        status, answer = await anyio.to_thread.run_sync(gw.post, "/faults", body, token)
        if status != 200:
            raise RuntimeError(f"hang_bulkhead {fault.target}: {status} {answer}")
    elif k is FaultKind.POSTGRES_STOP:
        await anyio.to_thread.run_sync(pg.stop, "immediate")
        await anyio.sleep(fault.duration_s)
        await start_on_loop(pg)
    elif k is FaultKind.GATEWAY_KILL:
        await anyio.to_thread.run_sync(gw.kill)
        if alarms is not None:
            alarms.killed(fault)
        await anyio.sleep(fault.duration_s)
        await anyio.to_thread.run_sync(gw.start)
    elif k is FaultKind.RELOAD_STORM:
        outcome.problems += await reload_storm(fault, gw, report)
    elif k is FaultKind.DISK_FILL:
        await fill_through(fault, state_dir, report, outcome.disk)
    elif k is FaultKind.BROKER_KILL:
        await broker_kill(fault, broker, report)
    else:
        dev = modbus.get(fault.target) or next(iter(modbus.values()))
        assert dev.sim is not None
        if k is FaultKind.DEVICE_DISCONNECT:
            dev.sim.drop_connections()
        elif k is FaultKind.DEVICE_REBOOT:
            await dev.sim.reboot(fault.duration_s)
        elif k is FaultKind.GARBAGE_FRAMES:
            dev.sim.faults.garbage_probability = 0.3
            await anyio.sleep(fault.duration_s)
            dev.sim.faults.garbage_probability = 0.0
    if k_timed:
        report.progress(f"fault {fault.kind.value} over")


def modbus_devices(d: Devices) -> list[ModbusCounter]:
    """Healthy ``modbus-N`` devices, then the slow and the flapping ones."""
    slow = Faults(slow_reply_s=0.9 * d.modbus_timeout_s, slow_probability=1.0)
    flapping = Faults(reboot_every_s=d.flap_up_s, reboot_down_s=d.flap_down_s)
    healthy = d.modbus - d.modbus_slow - d.modbus_flapping
    return [
        *(ModbusCounter(f"modbus-{i}", d.modbus_rate_per_s) for i in range(healthy)),
        *(ModbusCounter(f"modbus-slow-{i}", d.modbus_rate_per_s, slow) for i in range(d.modbus_slow)),
        *(
            ModbusCounter(f"modbus-flapping-{i}", d.modbus_rate_per_s, flapping)
            for i in range(d.modbus_flapping)
        ),
    ]


@dataclass
class Outcome:
    """What the checker needs besides the streams."""

    streams: dict[str, Stream]
    exit_code: int | None = None  # of the gateway's final SIGTERM stop
    failed: list[str] = field(default_factory=list)  # components FAILED at the end
    problems: list[str] = field(default_factory=list)  # found by the faults themselves
    skipped: str = ""  # why the scenario could not run here
    disk: DiskWatch = field(default_factory=DiskWatch)  # what disk_fill saw
    samples: Samples | None = None  # resources over the run (a soak)
    load_landed: int = 0  # load readings in PostgreSQL when production ended
    alarms: AlarmReport | None = None  # the alarm scenario's check


async def run_scenario(sc: Scenario, workdir: Path, report: Report) -> Outcome:
    """Run ``sc`` in ``workdir``; returns the streams with their numbers filled in.

    With ``disk_mib`` the gateway's state lives on a tmpfs of that size; where
    none can be mounted the outcome says why it was skipped."""
    if sc.disk_mib is None:
        return await _run(sc, workdir, report)
    state_dir = workdir / "state"
    try:
        with small_filesystem(state_dir, sc.disk_mib):
            report.progress(f"state on a {sc.disk_mib} MiB tmpfs at {state_dir}")
            outcome = await _run(sc, workdir, report)
            problems, account = await anyio.to_thread.run_sync(
                check_disk, state_dir, LogConfig(), workdir, outcome.disk
            )
            report.progress(account)
            outcome.problems += problems
            return outcome
    except DiskUnavailable as exc:
        return Outcome({}, skipped=str(exc))


async def _run(sc: Scenario, workdir: Path, report: Report) -> Outcome:
    try:
        async with local_broker(sc, workdir, report) as broker:
            return await _run_with(sc, workdir, report, broker)
    except BrokerUnavailable as exc:
        return Outcome({}, skipped=str(exc))


async def _run_with(
    sc: Scenario, workdir: Path, report: Report, broker: DurableBroker | None
) -> Outcome:
    pg = PostgresServer()
    await anyio.to_thread.run_sync(pg.init)
    await start_on_loop(pg)
    report.progress(f"PostgreSQL on 127.0.0.1:{pg.port}")
    token = secrets.token_hex(16)
    mqtt = [MqttCounter(f"mqtt-{i}", 0, sc.devices.mqtt_interval_s) for i in range(sc.devices.mqtt)]
    modbus = {d.id: d for d in modbus_devices(sc.devices)}
    alarms = AlarmParts.of(sc.alarms) if sc.alarms is not None else None
    alarm_devices = alarms.devices if alarms is not None else []
    streams = {d.id: Stream(d.id, "mqtt") for d in [*mqtt, *alarm_devices]}
    disturbed = sc.devices.modbus_slow + sc.devices.modbus_flapping
    for d in modbus.values():
        healthy = d.faults == Faults()
        limit = sc.devices.healthy_max_not_read if disturbed and healthy else None
        streams[d.id] = Stream(d.id, "modbus", max_not_read=limit)
    outcome = Outcome(streams)
    config = workdir / "gateway.toml"
    state_dir = workdir / "state"
    gw = GatewayProcess(config)
    try:
        async with anyio.create_task_group() as tg:
            broker_port = 0
            if mqtt or alarm_devices:
                broker_port = await tg.start(run_mqtt_broker, MqttBrokerConfig())
            hook_url = await tg.start(alarms.hook.run) if alarms is not None else ""
            until = time.monotonic() + 3600  # devices: the real end is set below
            for dev in modbus.values():
                await tg.start(dev.run, until)
            config.write_text(
                gateway_toml(sc, state_dir, token, broker_port, list(modbus.values()), pg.dsn(),
                             hook_url)
                + log_toml(broker)
            )
            await anyio.to_thread.run_sync(gw.start)
            with anyio.fail_after(60):
                while not await anyio.to_thread.run_sync(gw.ready):
                    await anyio.sleep(0.1)
            report.progress(f"gateway ready at {gw.url}; producing for {sc.duration_s:g}s")
            if alarms is not None:
                tg.start_soon(alarms.start_acker(lambda: gw.url, token).run)
            t0 = time.monotonic()
            end = t0 + sc.duration_s
            if sc.resources is not None:
                outcome.samples = Samples(sc.resources.warmup_s)
                every = sc.resources.sample_interval_s
                args = (every, gw, state_dir, t0, end, outcome.samples, report.progress)
                tg.start_soon(sample_every, *args)
            async with anyio.create_task_group() as producers:
                for m in [*mqtt, *alarm_devices]:
                    m.port = broker_port
                    producers.start_soon(m.run, end)
                for fault in sc.faults:
                    producers.start_soon(
                        _apply, fault, t0, gw, pg, modbus, report, token, outcome, state_dir,
                        broker, alarms,
                    )
                await anyio.sleep(sc.duration_s)
                for dev in modbus.values():  # stop counting: production ends
                    dev.produced = dev.value()
                    if dev.sim is not None:  # and the device goes away: the log gets quiet
                        await dev.sim.stop()
            for dev in modbus.values():
                streams[dev.id].produced = dev.produced
            for m in [*mqtt, *alarm_devices]:
                streams[m.id].produced = m.produced
            if sc.load.devices:
                outcome.load_landed = await anyio.to_thread.run_sync(landed, pg.dsn(), TABLE)
            report.progress("production over; draining")
            await _drain(sc, state_dir, pg, streams, report, log_config(broker))
            if alarms is not None:
                outcome.alarms = await alarms.drain(
                    log_config(broker), state_dir, sc.drain_timeout_s, report
                )
            health = await anyio.to_thread.run_sync(gw.health)
            outcome.failed = [c["id"] for c in health["components"] if c["state"] == "FAILED"]
            tg.cancel_scope.cancel()
    finally:
        if gw.proc and gw.proc.poll() is None:
            outcome.exit_code = await anyio.to_thread.run_sync(gw.stop)
        elif gw.proc:  # it ended by itself (a crash): say how
            outcome.exit_code = gw.proc.returncode
        report.progress(f"gateway stopped (exit {outcome.exit_code})")
        await anyio.to_thread.run_sync(pg.cleanup)
    return outcome


async def _drain(
    sc: Scenario,
    state_dir: Path,
    pg: PostgresServer,
    streams: dict[str, Stream],
    report: Report,
    log_cfg: LogConfig,
) -> None:
    deadline = time.monotonic() + sc.drain_timeout_s
    while True:
        await read_from_log(log_cfg, state_dir, streams)
        await anyio.to_thread.run_sync(read_from_postgres, pg.dsn(), TABLE, streams)
        if settled(streams) or time.monotonic() > deadline:
            return
        missing = sum(len(s.lost) for s in streams.values())
        report.progress(f"waiting for {missing} readings to arrive")
        await anyio.sleep(1.0)
