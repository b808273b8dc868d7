"""MQTT device simulator: a publisher of JSON / plain payloads fed by signal
models, with fault injection (garbage payloads, disconnects); plus a private
Mosquitto broker for demos that have none.

``run_mqtt_publisher(cfg)`` publishes every ``interval_s`` until cancelled;
``started()`` gets ``mqtt://host:port`` once the first connection is up.
Topics may contain ``{asset}``, expanded for each name in ``assets``. Faults:

* ``garbage_probability``: replace a payload by one of: invalid JSON, bytes
  that are not UTF-8, a wrong-typed field, ``NaN`` (what real field devices
  send after a firmware bug);
* ``disconnect_every_s`` / ``disconnect_down_s``: drop the connection and stay
  away for a while (the gateway sees nothing, its QoS 1 session keeps going).

``run_mqtt_broker(cfg)`` starts ``mosquitto -c FILE`` on loopback (ephemeral
port by default), ``started()`` gets the port, and stops it by PID.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import aiomqtt
import anyio
import msgspec
from anyio.abc import TaskStatus

from otgate.config.base import (
    Identifier,
    NonNegativeSeconds,
    Port,
    PortOrZero,
    PositiveSeconds,
    StrictStruct,
)
from otgate.simulations.signals import Constant, SignalConfig, make_signal
from otgate.supervisors.process_group import set_death_signal

log = logging.getLogger("otgate.simulations.mqtt")

Probability = Annotated[float, msgspec.Meta(ge=0, le=1, description="probability, 0-1")]


class SimValueType(enum.Enum):
    NUMBER = "number"
    INT = "int"
    BOOL = "bool"
    STRING = "string"


class MqttSimField(StrictStruct):
    """One value inside a JSON payload."""

    path: Annotated[str, msgspec.Meta(min_length=1)]
    """Dotted path; intermediate objects are created (``motor.state``)."""
    signal: SignalConfig = Constant()
    """Signal model feeding the value."""
    type: SimValueType = SimValueType.NUMBER
    """How the sample is encoded."""


class MqttSimTopic(StrictStruct):
    """One published topic (or one per asset with ``{asset}``)."""

    topic: Annotated[str, msgspec.Meta(min_length=1)]
    """Topic; ``{asset}`` is replaced by each name in ``assets``."""
    assets: list[Identifier] = []
    """Asset names for ``{asset}`` (empty = publish the topic as is)."""
    payload: Literal["json", "plain"] = "json"
    """json: an object built from ``fields``; plain: the sample of ``signal`` as text."""
    fields: list[MqttSimField] = []
    """json payloads: the values."""
    signal: SignalConfig = Constant()
    """plain payloads: the signal."""
    type: SimValueType = SimValueType.NUMBER
    """plain payloads: encoding of the sample."""
    time_field: str | None = "ts"
    """json payloads: field carrying the time in epoch ms (None = no timestamp)."""
    qos: Literal[0, 1] = 0
    """Publish QoS."""

    def __post_init__(self) -> None:
        if "{asset}" in self.topic and not self.assets:
            raise ValueError(f"topic {self.topic!r} uses {{asset}} but assets is empty")
        if self.payload == "json" and not self.fields:
            raise ValueError("a json topic needs fields")


class MqttSimFaults(StrictStruct):
    """Fault injection."""

    garbage_probability: Probability = 0.0
    """Share of messages replaced by a malformed payload."""
    disconnect_every_s: PositiveSeconds | None = None
    """Drop the broker connection this often (None = never)."""
    disconnect_down_s: NonNegativeSeconds = 2.0
    """Seconds to stay disconnected."""


class MqttSimConfig(StrictStruct):
    """A simulated field device (or gateway) publishing to a broker."""

    host: str = "127.0.0.1"
    """Broker host."""
    port: Port = 1883
    """Broker port."""
    client_id: str = "otgate-sim-publisher"
    """Publisher client id."""
    username: str | None = None
    """User name (None = anonymous)."""
    password: str | None = None
    """Password."""
    interval_s: PositiveSeconds = 1.0
    """Seconds between publishing rounds (each round: every topic x asset once)."""
    topics: list[MqttSimTopic] = []
    """What to publish."""
    faults: MqttSimFaults = MqttSimFaults()
    """Fault injection."""
    seed: int = 0
    """Seed of the signal and fault random generators."""


class MqttPublisher:
    """The running publisher (programmatic handle for tests and benches)."""

    def __init__(self, cfg: MqttSimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.t0 = time.monotonic()
        self.plan: list[tuple[str, MqttSimTopic, list[Any]]] = []
        for spec in cfg.topics:
            for asset in spec.assets or [""]:
                topic = spec.topic.replace("{asset}", asset)
                if spec.payload == "json":
                    samplers = [
                        make_signal(f.signal, seed=f"{cfg.seed}:{topic}:{f.path}")
                        for f in spec.fields
                    ]
                else:
                    samplers = [make_signal(spec.signal, seed=f"{cfg.seed}:{topic}")]
                self.plan.append((topic, spec, samplers))
        self.published = 0
        self.garbage = 0
        self.disconnects = 0
        self.connected = anyio.Event()

    def round(self) -> list[tuple[str, bytes, int]]:
        """The messages of one publishing round: ``(topic, payload, qos)``."""
        t = time.monotonic() - self.t0
        ts = time.time_ns() // 1_000_000
        p = self.cfg.faults.garbage_probability
        out = []
        for topic, spec, samplers in self.plan:
            if p and self.rng.random() < p:
                self.garbage += 1
                out.append((topic, self._garbage(spec), spec.qos))
                continue
            if spec.payload == "plain":
                value = _encode(samplers[0](t), spec.type)
                text = ("true" if value else "false") if isinstance(value, bool) else str(value)
                out.append((topic, text.encode(), spec.qos))
                continue
            doc: dict[str, Any] = {}
            if spec.time_field:
                _put(doc, spec.time_field, ts)
            for fld, sampler in zip(spec.fields, samplers, strict=True):
                _put(doc, fld.path, _encode(sampler(t), fld.type))
            out.append((topic, json.dumps(doc, separators=(",", ":")).encode(), spec.qos))
        return out

    def _garbage(self, spec: MqttSimTopic) -> bytes:
        kind = self.rng.randrange(4)
        if kind == 0:
            return b'{"ts": 1, "value": '  # truncated JSON
        if kind == 1:
            return bytes(self.rng.randrange(256) for _ in range(12)) + b"\xff"
        if kind == 2 and spec.payload == "json":
            doc: dict[str, Any] = {}
            for fld in spec.fields:
                _put(doc, fld.path, "#ERR")
            return json.dumps(doc).encode()
        return b"NaN"

    async def run(self, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        started = False
        delay = 0.2
        while True:
            try:
                async with aiomqtt.Client(
                    cfg.host,
                    cfg.port,
                    identifier=cfg.client_id,
                    username=cfg.username,
                    password=cfg.password,
                ) as client:
                    delay = 0.2
                    self.connected.set()
                    if not started:
                        started = True
                        task_status.started(f"mqtt://{cfg.host}:{cfg.port}")
                    await self._publish_until_fault(client)
                self.connected = anyio.Event()
                self.disconnects += 1
                log.info("sim_fault kind=mqtt_disconnect down_s=%.1f", cfg.faults.disconnect_down_s)
                await anyio.sleep(cfg.faults.disconnect_down_s)
            except aiomqtt.MqttError as exc:
                self.connected = anyio.Event()
                log.info("sim_publisher_reconnect error=%s delay_s=%.1f", exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _publish_until_fault(self, client: aiomqtt.Client) -> None:
        every = self.cfg.faults.disconnect_every_s
        until = time.monotonic() + every if every else None
        next_at = time.monotonic()
        while until is None or time.monotonic() < until:
            for topic, body, qos in self.round():
                await client.publish(topic, body, qos=qos)
                self.published += 1
            next_at += self.cfg.interval_s
            now = time.monotonic()
            if next_at < now:
                next_at = now
            await anyio.sleep(next_at - now)


def _encode(value: Any, vtype: SimValueType) -> Any:
    if vtype is SimValueType.NUMBER:
        return float(value)
    if vtype is SimValueType.INT:
        return round(value)
    if vtype is SimValueType.BOOL:
        return bool(value)
    return str(value)


def _put(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        doc = doc.setdefault(key, {})
    doc[last] = value


async def run_mqtt_publisher(
    cfg: MqttSimConfig,
    *,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
    handle: list[MqttPublisher] | None = None,
) -> None:
    """Publish ``cfg`` until cancelled; ``started()`` gets ``mqtt://host:port``.

    Waits (with backoff) for the broker; ``handle`` receives the publisher.
    """
    pub = MqttPublisher(cfg)
    if handle is not None:
        handle.append(pub)
    log.info(
        "sim_started kind=mqtt_publisher broker=%s:%d messages_per_round=%d",
        cfg.host,
        cfg.port,
        len(pub.plan),
    )
    await pub.run(task_status=task_status)


class MqttBrokerConfig(StrictStruct):
    """A private Mosquitto broker for demos and benches."""

    host: str = "127.0.0.1"
    """Address to listen on (keep it loopback)."""
    port: PortOrZero = 0
    """Port; 0 = pick a free one (reported at start)."""
    binary: str | None = None
    """Path of ``mosquitto``; None = search PATH and /usr/sbin."""


def find_mosquitto(binary: str | None = None) -> str | None:
    for candidate in (binary, shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


async def run_mqtt_broker(
    cfg: MqttBrokerConfig, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run ``mosquitto -c FILE`` until cancelled; ``started()`` gets the port.

    Raises FileNotFoundError when no mosquitto binary exists (install the
    Debian package ``mosquitto``). The process is stopped by its PID, and it
    dies with the process that started it even when that one is SIGKILLed
    (PR_SET_PDEATHSIG): call this from the event loop's thread.
    """
    binary = find_mosquitto(cfg.binary)
    if binary is None:
        raise FileNotFoundError("mosquitto not found; apt-get install -y mosquitto")
    port = cfg.port
    if port == 0:
        with socket.socket() as s:
            s.bind((cfg.host, 0))
            port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="otgate-mosquitto-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} {cfg.host}\nallow_anonymous true\npersistence false\n"
            f"log_dest stderr\nlog_type error\nuser {pwd.getpwuid(os.getuid()).pw_name}\n"
        )
        # Popen, not anyio.open_process: only Popen takes a preexec_fn. Forking on
        # the loop's thread is on purpose (the death signal follows that thread).
        proc = subprocess.Popen(  # noqa: ASYNC220
            [binary, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=None,
            preexec_fn=set_death_signal,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited with {proc.returncode}")
                try:
                    stream = await anyio.connect_tcp(cfg.host, port)
                    await stream.aclose()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    await anyio.sleep(0.05)
                    continue
                # The port answers: make sure it is our broker and not one still
                # holding the port (mosquitto exits at once when it cannot bind).
                await anyio.sleep(0.1)
                if proc.poll() is None:
                    break
            log.info(
                "sim_started kind=mqtt_broker host=%s port=%d pid=%d", cfg.host, port, proc.pid
            )
            task_status.started(port)
            while proc.poll() is None:
                await anyio.sleep(0.2)
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        finally:
            with anyio.CancelScope(shield=True):
                await _stop_process(proc, timeout=5.0)


async def _stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s; reaps the process."""
    if proc.poll() is None:
        proc.terminate()
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await anyio.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
            await anyio.to_thread.run_sync(proc.wait)
