"""A scenario: counting devices, the gateway that reads them, and a timeline
of faults. Decoded strictly from TOML like the gateway config."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from otgate.actors.log.config import Backend
from otgate.config.base import Identifier, NonNegativeSeconds, PositiveSeconds, StrictStruct


class FaultKind(enum.Enum):
    KILL_BULKHEAD = "kill_bulkhead"  # SIGKILL one bulkhead (target = bulkhead id)
    HANG_BULKHEAD = "hang_bulkhead"  # block its event loop (target = bulkhead id)
    DEVICE_DISCONNECT = "device_disconnect"  # Modbus device drops its connections
    DEVICE_REBOOT = "device_reboot"  # Modbus device away for duration_s
    GARBAGE_FRAMES = "garbage_frames"  # Modbus replies corrupted for duration_s
    POSTGRES_STOP = "postgres_stop"  # PostgreSQL down for duration_s
    GATEWAY_KILL = "gateway_kill"  # SIGKILL the gateway, restart after duration_s
    RELOAD_STORM = "reload_storm"  # `count` SIGHUPs over duration_s, broken and valid files
    DISK_FILL = "disk_fill"  # ballast to each of fill_pct, duration_s each, then freed
    BROKER_KILL = "broker_kill"  # SIGKILL the Kafka broker, restart after duration_s
    WEBHOOK_DOWN = "webhook_down"  # the alarms' webhook peer stopped for duration_s
    WEBHOOK_FAIL = "webhook_fail"  # the webhook peer answers 503 for duration_s
    WEBHOOK_SLOW = "webhook_slow"  # it accepts, then answers after the router's timeout


class Fault(StrictStruct):
    """One fault on the timeline."""

    at_s: NonNegativeSeconds
    """Seconds after the devices started."""
    kind: FaultKind
    """What to break."""
    target: str = ""
    """Bulkhead or device id, where the kind needs one."""
    duration_s: NonNegativeSeconds = 3.0
    """How long the fault lasts (reboot, garbage, postgres_stop, gateway_kill,
    reload_storm, broker_kill, webhook_*)."""
    count: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20
    """reload_storm: SIGHUPs sent, evenly over ``duration_s``; before each, the
    config file is rewritten, alternately broken and valid (the last one valid)."""
    fill_pct: list[Annotated[float, msgspec.Meta(gt=0, lt=100)]] = []
    """disk_fill: used percents of the state filesystem to fill to in turn (a
    ballast file), each held for ``duration_s``; then the ballast is deleted.
    Needs the scenario's ``disk_mib``."""


class Devices(StrictStruct):
    """The counting devices: every value they produce is a sequence number."""

    mqtt: Annotated[int, msgspec.Meta(ge=0, le=50)] = 2
    """MQTT devices publishing ``{"seq": n, "ts": ms}`` at QoS 1."""
    mqtt_interval_s: PositiveSeconds = 0.05
    """Seconds between one MQTT device's messages."""
    modbus: Annotated[int, msgspec.Meta(ge=0, le=20)] = 1
    """Modbus TCP devices whose register counts up (polled by the gateway)."""
    modbus_rate_per_s: PositiveSeconds = 5.0
    """Counter increments per second."""
    modbus_poll_s: PositiveSeconds = 0.1
    """The gateway's poll interval."""
    modbus_timeout_s: PositiveSeconds = 0.5
    """The gateway's Modbus request timeout."""
    modbus_slow: Annotated[int, msgspec.Meta(ge=0, le=20)] = 0
    """How many of the Modbus devices answer every request after 90 % of
    ``modbus_timeout_s`` (they miss counts; their neighbours must not)."""
    modbus_flapping: Annotated[int, msgspec.Meta(ge=0, le=20)] = 0
    """How many of the Modbus devices flap: serve for ``flap_up_s``, go away for
    ``flap_down_s`` (connections refused), serve again, and so on."""
    flap_up_s: PositiveSeconds = 2.0
    """A flapping device's time up between outages."""
    flap_down_s: PositiveSeconds = 1.0
    """A flapping device's outage."""
    healthy_max_not_read: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.02
    """With slow or flapping devices: the share of a healthy Modbus device's
    counts the gateway may miss (its poll rate must be unchanged by them)."""

    def __post_init__(self) -> None:
        if self.modbus_slow + self.modbus_flapping > self.modbus:
            raise ValueError("modbus_slow + modbus_flapping: more than modbus devices")


class Load(StrictStruct):
    """Background load: synthetic devices (as in ``otgate bench pipeline``) in a
    bulkhead ``load``; their readings take the whole path to PostgreSQL but are
    not counted by the checker (only the counting devices are)."""

    devices: Annotated[int, msgspec.Meta(ge=0, le=100)] = 0
    """Synthetic devices (0: no load)."""
    points: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    """Points per device, each a noisy sine."""
    interval_s: PositiveSeconds = 1.0
    """Seconds between one device's samples: offered points/s = devices x points / interval_s."""

    @property
    def points_per_s(self) -> float:
        return self.devices * self.points / self.interval_s


class Alarms(StrictStruct):
    """Devices that drive one alarm each through raise/ack/clear on a schedule, an
    operator that acks every activation over HTTP, and a webhook peer the alert
    router notifies (``simulations/harness/alarm_*.py``)."""

    devices: Annotated[int, msgspec.Meta(ge=1, le=10)] = 2
    """MQTT devices ``alarm-N`` (QoS 1, persistent session: every sample reaches
    the evaluator), each publishing ``temp`` above and below the alarm's limit."""
    high_s: PositiveSeconds = 5.0
    """How long a device stays above the limit (one activation)."""
    low_s: PositiveSeconds = 5.0
    """How long it stays below the limit between activations (it starts low)."""
    interval_s: PositiveSeconds = 0.25
    """Seconds between one device's samples."""
    ack_after_s: NonNegativeSeconds = 0.5
    """The operator's reaction time: an activation is acked this long after it is seen."""
    webhook_timeout_s: PositiveSeconds = 2.0
    """The router's per-request timeout to the webhook (``webhook_slow`` answers after it)."""


class Resources(StrictStruct):
    """Sample every bulkhead's resident memory and open file descriptors and
    the size of the gateway's state dir (its log) during the run."""

    sample_interval_s: PositiveSeconds = 1.0
    """Seconds between samples (stretched with ``--duration`` like the faults)."""
    warmup_s: NonNegativeSeconds = 6.0
    """Samples before this are not used for the growth fit (stretched too)."""


class Scenario(StrictStruct):
    """A run of the harness."""

    name: Identifier
    """Shown in the report."""
    duration_s: PositiveSeconds = 20.0
    """How long the devices produce."""
    drain_timeout_s: PositiveSeconds = 60.0
    """After production stops: how long delivery may take to catch up."""
    devices: Devices = Devices()
    """What produces."""
    faults: list[Fault] = []
    """The timeline."""
    aggregator: bool = True
    """Run the aggregator too (its 1 s windows go to PostgreSQL as well)."""
    disk_mib: Annotated[int, msgspec.Meta(ge=16, le=4096)] | None = None
    """Run the gateway's state (its log) on a tmpfs of this many MiB, checking
    the disk tiers every 0.5 s, with every MQTT reading also an alarm (so the
    never-evicted alarm topics hold something). Mounting needs root; elsewhere
    the scenario is skipped (``SKIP`` on stdout, exit code 0)."""

    load: Load = Load()
    """Synthetic background load."""
    resources: Resources | None = None
    """Sample memory, file descriptors and log size (a soak run)."""
    log_backend: Backend = Backend.EMBEDDED
    """The gateway's log: ``embedded`` (SQLite) or ``kafka``: then the harness
    starts a local tansu broker on durable S3 storage (alocals3) for it, and
    skips the scenario where they are not installed."""
    telemetry_retention_s: PositiveSeconds | None = None
    """Retention of the telemetry topics of the log (a long run keeps its log bounded)."""
    alarms: Alarms | None = None
    """Alarm devices, the acker and the webhook peer (checked transition by transition)."""

    def __post_init__(self) -> None:
        for i, f in enumerate(self.faults):
            if f.at_s + f.duration_s * max(1, len(f.fill_pct)) > self.duration_s + self.drain_timeout_s:
                raise ValueError(f"faults[{i}]: ends after the scenario")
            needs_target = (FaultKind.KILL_BULKHEAD, FaultKind.HANG_BULKHEAD)
            if f.kind in needs_target and not f.target:
                raise ValueError(f"faults[{i}]: {f.kind.value} needs a target bulkhead")
            if f.kind is FaultKind.RELOAD_STORM and f.duration_s <= 0:
                raise ValueError(f"faults[{i}]: reload_storm needs duration_s > 0")
            if f.kind is FaultKind.BROKER_KILL and self.log_backend is not Backend.KAFKA:
                raise ValueError(f"faults[{i}]: broker_kill needs log_backend = 'kafka'")
            if f.kind.value.startswith("webhook_") and self.alarms is None:
                raise ValueError(f"faults[{i}]: {f.kind.value} needs the scenario's [alarms]")
            if f.kind is FaultKind.DISK_FILL and (not f.fill_pct or self.disk_mib is None):
                raise ValueError(f"faults[{i}]: disk_fill needs fill_pct and the scenario's disk_mib")


def stretch(sc: Scenario, duration_s: float) -> Scenario:
    """``--duration``: the same scenario over ``duration_s``; fault times, the
    resource sample interval and the warm-up scale with it (fault lengths do not)."""
    k = duration_s / sc.duration_s
    faults = [msgspec.structs.replace(f, at_s=f.at_s * k) for f in sc.faults]
    res = sc.resources and msgspec.structs.replace(
        sc.resources,
        sample_interval_s=sc.resources.sample_interval_s * k,
        warmup_s=sc.resources.warmup_s * k,
    )
    return msgspec.structs.replace(sc, duration_s=duration_s, faults=faults, resources=res)
