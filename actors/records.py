"""Records that travel through the log.

msgspec Structs are the one source of truth for every record; the Avro schemas
on the log are derived from them (see ``actors/log``). Times are integer
nanoseconds since the Unix epoch.
"""

from __future__ import annotations

import enum
import time

import msgspec


class Quality(enum.Enum):
    """How far a value can be trusted, worst last."""

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow Python

    GOOD = "GOOD"
    SUSPECT = "SUSPECT"
    UNCERTAIN = "UNCERTAIN"
    BAD = "BAD"


class Classification(enum.Enum):
    """What a point means to the plant: a sample, a state change, or an alarm bit."""

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow Python

    TELEMETRY = "TELEMETRY"
    EVENT = "EVENT"
    ALARM = "ALARM"


Value = float | int | bool | str


class Reading(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One value of one parameter of one asset, as a device session read it.

    ``device_time`` is the source's own timestamp when it has one; analytics use
    it. When it is missing the validator falls back to ``gateway_time`` and marks
    the reading UNCERTAIN. ``seq`` increases per adapter so a checker can tell a
    gap (a lost reading) from a duplicate. ``gc=False``: a reading holds only
    scalars and enum members, so it is never part of a reference cycle.
    """

    asset_id: str
    parameter: str
    value: Value | None
    unit: str = ""
    quality: Quality = Quality.GOOD
    classification: Classification = Classification.TELEMETRY
    device_time: int | None = None
    gateway_time: int
    clock_skew_ms: int | None = None
    seq: int = 0
    adapter_id: str = ""
    adapter_version: str = ""


def now_ns() -> int:
    """Wall-clock time in integer nanoseconds, the unit of every record time."""
    return time.time_ns()


class AlarmState(enum.Enum):
    """An alarm's state (ISA-18.2 / IEC 62682; OPC UA Part 9 in brackets).

    The seeds' four names map onto it: ACTIVE = ``ACTIVE_UNACKED``,
    ACKNOWLEDGED = ``ACTIVE_ACKED``, CLEARED = ``CLEARED_UNACKED`` then
    ``NORMAL``, SUPPRESSED = ``SUPPRESSED`` / ``SHELVED`` / ``OUT_OF_SERVICE``.
    While shelved, suppressed or out of service the condition is still
    evaluated (``Alarm.active``) but nobody is notified.
    """

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow Python

    NORMAL = "NORMAL"
    """Condition inactive and acknowledged (Inactive, Acked)."""
    ACTIVE_UNACKED = "ACTIVE_UNACKED"
    """Condition active, not yet acknowledged (Active, Unacked)."""
    ACTIVE_ACKED = "ACTIVE_ACKED"
    """Condition active, acknowledged (Active, Acked)."""
    CLEARED_UNACKED = "CLEARED_UNACKED"
    """Returned to normal before anyone acknowledged it (RTN unacknowledged)."""
    SHELVED = "SHELVED"
    """Hidden by an operator for a time; expires by itself (Shelved)."""
    SUPPRESSED = "SUPPRESSED"
    """Hidden by design (e.g. its parent alarm is active) or by an operator (Suppressed)."""
    OUT_OF_SERVICE = "OUT_OF_SERVICE"
    """Taken out of service (maintenance); not evaluated for notification (OutOfService)."""


class AlarmSeverity(enum.Enum):
    """An alarm's priority, most urgent last."""

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow Python

    INFO = "INFO"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class Severity(enum.Enum):
    """How urgent an alarm or a gateway event is, most urgent last."""

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow Python

    INFO = "INFO"
    WARNING = "WARNING"
    MAJOR = "MAJOR"
    CRITICAL = "CRITICAL"


class Aggregate(msgspec.Struct, frozen=True, kw_only=True):
    """Statistics of one parameter of one asset over one time window.

    ``window`` names the window length (``1s``, ``1min``, ``1h``); the window
    covers ``[window_start, window_end)`` in device time. ``quality`` is the
    worst quality of the readings counted. ``min``/``max``/``mean``/``sum`` are
    None when the window holds no numeric value (e.g. only strings).
    ``stddev`` and the percentiles cover the ``numeric_count`` numeric values;
    ``count_good`` … ``count_bad`` are the quality summary.
    """

    asset_id: str
    parameter: str
    window: str
    window_start: int
    window_end: int
    count: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    sum: float | None = None
    first: Value | None = None
    last: Value | None = None
    unit: str = ""
    quality: Quality = Quality.GOOD
    gateway_time: int
    # Added after v1 with defaults, so the schema stays BACKWARD compatible.
    stddev: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    numeric_count: int = 0
    count_good: int = 0
    count_suspect: int = 0
    count_uncertain: int = 0
    count_bad: int = 0


class Alarm(msgspec.Struct, frozen=True, kw_only=True):
    """One transition of one alarm (``alarms.clean``): the log is the alarm journal.

    ``alarm_id`` is stable for one alarm definition on one asset, so the last
    record per ``alarm_id`` is the alarm's current state. ``occurrence_id`` is
    new for each activation (raise) and kept by every later transition of that
    activation (ack, clear, shelve...). ``seq`` counts the alarm's transitions
    (1, 2, 3 ...): ``(alarm_id, seq)`` names one transition, so a consumer can
    drop a replayed one and a notifier can use it as its idempotency key.
    ``event`` says what moved it (``raise``, ``clear``, ``ack``, ``shelve``,
    ``unshelve``, ``shelve_expired``, ``suppress``, ``unsuppress``, ``reset``,
    ``out_of_service``, ``return_to_service``). ``by``/``role``/``source`` say
    who (``evaluator`` for the gateway itself) and from where; ``request_id``
    is the operator command's id (a command applied twice changes nothing).
    """

    alarm_id: str
    occurrence_id: str = ""
    seq: int = 0
    definition: str = ""
    kind: str = ""
    asset_id: str
    parameter: str
    state: AlarmState
    previous_state: AlarmState = AlarmState.NORMAL
    event: str = ""
    active: bool = False
    acked: bool = True
    latched: bool = False
    severity: AlarmSeverity = AlarmSeverity.MEDIUM
    message: str = ""
    area: str = ""
    owner: str = ""
    value: Value | None = None
    limit: float | None = None
    by: str = ""
    role: str = ""
    source: str = ""
    note: str = ""
    request_id: str = ""
    shelved_until: int | None = None
    raised_time: int | None = None
    cleared_time: int | None = None
    ack_time: int | None = None
    device_time: int | None = None
    gateway_time: int


class AlarmAction(enum.Enum):
    """What an operator can do to alarms (``alarms.commands``)."""

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow Python

    ACK = "ACK"
    SHELVE = "SHELVE"
    UNSHELVE = "UNSHELVE"
    SUPPRESS = "SUPPRESS"
    UNSUPPRESS = "UNSUPPRESS"
    RESET = "RESET"
    OUT_OF_SERVICE = "OUT_OF_SERVICE"
    RETURN_TO_SERVICE = "RETURN_TO_SERVICE"


class AlarmCommand(msgspec.Struct, frozen=True, kw_only=True):
    """An operator's action on one or more alarms (``alarms.commands``).

    The evaluator applies it and writes the resulting transitions to
    ``alarms.clean`` with the same ``request_id``; a command whose
    ``request_id`` it already applied is skipped, so a retried call and a
    replay after a restart change nothing. ``duration_s`` is the shelving time.
    """

    request_id: str
    action: AlarmAction
    alarm_ids: list[str]
    note: str = ""
    duration_s: float | None = None
    by: str = ""
    role: str = ""
    source: str = ""
    gateway_time: int
    occurrence_ids: dict[str, str] = {}
    """Per alarm, the activation (``occurrence_id``) the action is meant for: the
    evaluator refuses it for an alarm that has moved on to another activation, so
    an ack sent while the alarm cleared and was raised again never acknowledges
    the new activation nobody has seen (OPC UA's Acknowledge names its EventId
    for the same reason). An alarm not named here: its current activation."""


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One operator call that changed (or tried to change) something (``logs.audit``).

    ``result`` is ``ok``, ``refused`` (401/403: nothing changed) or
    ``error: ...``. ``who`` is the token's name, never the token itself.
    """

    who: str
    role: str = ""
    source: str = ""
    surface: str = ""
    action: str
    target: str = ""
    result: str = "ok"
    detail: str = ""
    request_id: str = ""
    gateway_time: int


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A reading a stage refused, with the reason (``dlq.telemetry``, ``dlq.events``).

    ``source_topic``/``source_partition``/``source_offset`` point at the record
    the stage read, so an operator can reprocess it.
    """

    reading: Reading
    reason: str
    stage: str = ""
    error: str = ""
    source_topic: str = ""
    source_partition: int = -1
    source_offset: int = -1
    gateway_time: int


class DlqDisposition(enum.Enum):
    """What became of one dead letter (``dlq.dispositions``)."""

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow Python

    PENDING = "PENDING"
    """Still in the DLQ (no record yet, or re-validated and refused again: see ``reason``)."""
    REPROCESSING = "REPROCESSING"
    """Intent: the reading passed and is being appended to ``clean_topic`` (a crash
    here is resumed: ``clean_partition`` from ``clean_from`` is searched for it first)."""
    REPROCESSED = "REPROCESSED"
    """The reading is in ``clean_topic`` (once); reprocessing it again is a no-op."""
    DISCARDED = "DISCARDED"
    """An operator decided it never goes to ``*.clean``."""


class DispositionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One step in the life of one dead letter (``dlq.dispositions``, keyed
    ``<dlq_topic>/<partition>/<offset>``): the last record per key is its disposition.

    ``reason`` is the validator's new reason when a reprocess was refused again
    (state PENDING), or ``duplicate of <letter>`` when another letter of the
    same source record was reprocessed. ``source`` names that record
    (``<topic>/<partition>/<offset>``, e.g. of ``telemetry.raw``). ``by``/``role``
    say who, ``origin`` from where; ``request_id`` ties the step to its
    operator call (and to the audit record).
    """

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    state: DlqDisposition
    reason: str = ""
    note: str = ""
    source: str = ""
    clean_topic: str = ""
    clean_partition: int = -1
    clean_from: int = -1
    by: str = ""
    role: str = ""
    origin: str = ""
    request_id: str = ""
    gateway_time: int


class GatewayEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Something the gateway itself did or saw (``logs.gateway``).

    Examples: a log eviction (``kind="log_overflow"``), a disk tier change, a
    clock-skew warning. ``fields`` carries the event's key=value details.
    """

    kind: str
    severity: Severity = Severity.INFO
    message: str = ""
    source: str = ""
    fields: dict[str, str] = {}
    gateway_time: int


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """A bulkhead's liveness beat with its sequence number."""

    bulkhead_id: str
    seq: int
    gateway_time: int


class Statistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of one actor at one instant (``metrics()`` snapshot)."""

    actor_id: str
    counters: dict[str, float] = {}
    gateway_time: int


class CommandStatus(enum.Enum):
    """What became of a write request (``commands.results``).

    ACCEPTED is the only non-final status: the owning session took the request
    and is about to write. The first final result of a request id is its result.
    """

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow Python

    ACCEPTED = "ACCEPTED"
    """Taken by the owning device session; the write is about to go out."""
    WRITTEN = "WRITTEN"
    """The device confirmed the write and the value read back equals it."""
    MISMATCH = "MISMATCH"
    """The device confirmed the write but reads back another value (it clamps or
    overrides it; ``read_back`` says what it holds), or the read-back failed."""
    REJECTED = "REJECTED"
    """Refused: by the device (``code`` = Modbus exception code or OPC UA status
    code, ``detail`` its name) or by the gateway (limits, role, not writable,
    unknown point; ``code`` None). Nothing was written."""
    TIMED_OUT = "TIMED_OUT"
    """No answer within the budget, the connection dropped during the write, or
    the gateway died between taking and finishing it: not confirmed, never retried."""
    EXPIRED = "EXPIRED"
    """Its deadline passed before it could be executed (e.g. the device was down);
    nothing was written."""


class CommandRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request to write one value to one point (``commands.requests``).

    Keyed by ``adapter_id`` (the owning device session), so one device's
    requests stay in one partition and run in order. ``deadline`` (ns) is the
    wall-clock time after which it must not be executed. ``by``/``role``/
    ``source``/``surface`` say who asked, from where.
    """

    request_id: str
    adapter_id: str
    asset_id: str
    parameter: str
    value: Value
    deadline: int
    by: str = ""
    role: str = ""
    source: str = ""
    surface: str = ""
    gateway_time: int


class CommandResult(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a write request (``commands.results``), keyed by ``adapter_id``.

    ``value`` is what was asked; ``read_back`` what the device holds after the
    write (None when not read); ``code`` the device's exception / status code
    for REJECTED; ``latency_ms`` the time from the request's ``gateway_time``
    to this result.
    """

    request_id: str
    adapter_id: str
    asset_id: str
    parameter: str
    status: CommandStatus
    value: Value | None = None
    read_back: Value | None = None
    code: int | None = None
    detail: str = ""
    by: str = ""
    requested_time: int = 0
    latency_ms: float = 0.0
    gateway_time: int
