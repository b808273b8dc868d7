"""Device write-back at the root: write requests, their results, the device shadow.

Every surface (HTTP, the CLI through HTTP) writes through ``WriteService``:

* ``submit`` finds the point among the running config's writable points,
  checks the caller's role and the point's limits (a refusal is audited and
  never logged as a request), then appends a ``CommandRequest`` to
  ``commands.requests`` keyed by the owning adapter id and audits it. The
  owning device session, nudged over its bulkhead's control channel, executes
  it (``protocols/commands.py``) and appends its ``CommandResult`` steps to
  ``commands.results``.
* ``run`` tails both topics from their oldest record (they are small and
  never evicted), so after a restart the root knows every request and result
  again. ``wait`` returns a request's first final result. The tail looks
  every ``TAIL_GAP_S`` while a request logged here awaits its result, else
  every ``TAIL_IDLE_S`` (for a result nobody here waits for: one reported
  after a restart). It does not follow the log's change signal: that fires on
  every commit of any writer (telemetry too, hundreds a second at full rate),
  and each look is a fetch in a worker thread.
* The shadow (IoTSphere's reported / desired / delta) of an asset covers its
  writable points only: ``desired`` is the last requested value with its
  status; ``reported`` is the newest of (a) the value the device read back
  after a write and (b) the last reading of that point in the raw topics,
  found on demand by scanning the newest ``SHADOW_SCAN`` records of each raw
  partition (embedded log only: Kafka offers no cheap tail here, so there the
  read-backs alone report). ``delta`` lists the points whose desired value is
  not what the device reports. The root never tails ``telemetry.raw``: at
  full rate that would cost more than every write together.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from otgate.actors.actor import describe
from otgate.actors.messages import CommandsPending
from otgate.actors.records import (
    CommandRequest,
    CommandResult,
    CommandStatus,
    Reading,
    Value,
    now_ns,
)
from otgate.protocols.writes import WriteSpec, check_role, check_value, writable_index
from otgate.supervisors.access import Caller
from otgate.supervisors.intensity import backoff_delay
from otgate.supervisors.plan import plan_bulkheads

if TYPE_CHECKING:
    from otgate.supervisors.gateway import Gateway

log = logging.getLogger("otgate.writes")

REQUESTS, RESULTS = "commands.requests", "commands.results"
RAW_TOPICS = ("telemetry.raw", "events.raw", "alarms.raw")
DEFAULT_DEADLINE_S = 30.0
MAX_DEADLINE_S = 3600.0
MAX_KNOWN = 10_000
SHADOW_SCAN = 2000
TAIL_GAP_S = 0.025
TAIL_IDLE_S = 1.0
TAIL_BATCH = 1000
OUTSTANDING_GRACE_NS = 5_000_000_000  # past its deadline, a request's result is no longer awaited


class WriteRefused(Exception):
    """Refused at the root (nothing logged, nothing written); ``http`` is the status."""

    def __init__(self, http: int, detail: str) -> None:
        super().__init__(detail)
        self.http = http
        self.detail = detail


class _Known(msgspec.Struct, kw_only=True):
    request: CommandRequest
    steps: list[CommandResult] = []

    def final(self) -> CommandResult | None:
        return next((s for s in self.steps if s.status is not CommandStatus.ACCEPTED), None)

    def view(self) -> dict[str, Any]:
        final = self.final()
        last = final or (self.steps[-1] if self.steps else None)
        doc: dict[str, Any] = {
            "request_id": self.request.request_id,
            "asset_id": self.request.asset_id,
            "parameter": self.request.parameter,
            "value": self.request.value,
            "by": self.request.by,
            "status": last.status.value if last else "PENDING",
            "final": final is not None,
            "deadline": self.request.deadline,
        }
        if last is not None:
            doc.update(
                read_back=last.read_back, code=last.code, detail=last.detail,
                latency_ms=round(last.latency_ms, 2),
            )
        return doc


class WriteService:
    """The root's write path (see the module doc)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.known: OrderedDict[str, _Known] = OrderedDict()
        self.last: dict[tuple[str, str], str] = {}  # point -> its newest request id
        self.read_back: dict[tuple[str, str], tuple[Value, int]] = {}
        self._index_for: Any = None
        self._index: dict[tuple[str, str], tuple[str, WriteSpec]] = {}
        self._bulkhead_of: dict[str, str] = {}
        self._news = anyio.Event()
        self._submitted = anyio.Event()
        self._outstanding: dict[str, int] = {}  # request id -> deadline (ns), until its result
        self.tail_error: str | None = None

    def index(self) -> dict[tuple[str, str], tuple[str, WriteSpec]]:
        """(asset, parameter) -> (adapter id, limits) of the running config."""
        cfg = self.gateway.config
        if cfg is not self._index_for:
            self._index = {
                (asset, param): (a.id, spec)
                for a in cfg.adapters
                for asset, param, spec in writable_index(a)
            }
            self._bulkhead_of = {m: p.id for p in plan_bulkheads(cfg) for m in p.members}
            self._index_for = cfg
        return self._index

    # -- requests -------------------------------------------------------------------
    async def submit(
        self,
        caller: Caller,
        asset: str,
        parameter: str,
        value: Any,
        *,
        deadline_s: float | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Log a write request (see the module doc); raises WriteRefused."""
        target = f"{asset}/{parameter}"
        try:
            entry = self.index().get((asset, parameter))
            if entry is None:
                raise WriteRefused(404, f"{target} is not a writable point")
            adapter_id, spec = entry
            why = check_role(spec, caller.role.value)
            if why:
                raise WriteRefused(403, why)
            why = check_value(spec, value)
            if why:
                raise WriteRefused(422, why)
            deadline_s = DEFAULT_DEADLINE_S if deadline_s is None else deadline_s
            if not 0 < deadline_s <= MAX_DEADLINE_S:
                raise WriteRefused(400, f"deadline_s: expected 0 < seconds <= {MAX_DEADLINE_S:g}")
            rid = request_id or uuid.uuid4().hex
            if rid in self.known:
                raise WriteRefused(409, f"request id {rid} was used already")
        except WriteRefused as exc:
            await self.gateway.oplog.audit(
                caller, "point.write", target, result="refused", detail=exc.detail
            )
            raise
        now = now_ns()
        req = CommandRequest(
            request_id=rid, adapter_id=adapter_id, asset_id=asset, parameter=parameter,
            value=value, deadline=now + int(deadline_s * 1e9), by=caller.name,
            role=caller.role.value, source=caller.source, surface=caller.surface,
            gateway_time=now,
        )
        self._learn_request(req)  # before the await: a second call with this id gets 409
        try:
            # one transaction for both: the embedded log batches appends that wait together
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.gateway.oplog.append, REQUESTS, adapter_id, req)
                tg.start_soon(
                    partial(self.gateway.oplog.audit, detail=f"value={value!r}", request_id=rid),
                    caller, "point.write", target,
                )
        except BaseException:
            self.known.pop(rid, None)
            raise
        self._outstanding[rid] = req.deadline
        self._submitted.set()  # the tail follows the log closely until the result came
        bulkhead = self._bulkhead_of.get(adapter_id)
        if bulkhead is not None:
            await self.gateway.nudge(bulkhead, CommandsPending(adapter_id=adapter_id))
        return self.known[rid].view()

    async def wait(self, request_id: str, timeout: float) -> dict[str, Any] | None:
        """The request's view once final, or as it stands after ``timeout`` s."""
        with anyio.move_on_after(timeout):
            while True:
                known = self.known.get(request_id)
                if known is not None and known.final() is not None:
                    break
                await self._news.wait()
        known = self.known.get(request_id)
        return known.view() if known else None

    def view(self, request_id: str) -> dict[str, Any] | None:
        known = self.known.get(request_id)
        return known.view() if known else None

    # -- the tail of the command topics ---------------------------------------------
    async def run(self) -> None:
        """Tail ``commands.requests`` and ``commands.results`` for the gateway's life.

        Starts once the config has a writable point. A
        failing tail (the log unreachable) is logged, shown in ``tail_error``
        and tried again with backoff: it must never take the root down.
        """
        attempt = 0
        while True:
            while not self.index():
                await anyio.sleep(1.0)  # a reload may add writable points
            try:
                await self._tail()
            except Exception as exc:
                attempt += 1
                self.tail_error = describe(exc)
                delay = backoff_delay(attempt, 0.5, 30.0, 0.5)
                log.error("writes_tail_failed error=%s retry_in_s=%.1f", self.tail_error, delay)
                await anyio.sleep(delay)

    async def _tail(self) -> None:
        oplog = self.gateway.oplog
        backend = await oplog.backend()
        decoder = oplog.decoder
        assert decoder is not None
        # a fresh group that never commits: every start reads both topics from the oldest
        consumer = backend.consumer(f"otgate-root-{uuid.uuid4().hex[:12]}", [REQUESTS, RESULTS])
        try:
            while True:
                records = await consumer.fetch(TAIL_BATCH, timeout=0)
                self.tail_error = None
                for rec in records:
                    obj = await decoder.decode_async(rec.topic, rec.value)
                    if rec.topic == REQUESTS:
                        self._learn_request(obj)
                    else:
                        self._learn_result(obj)
                if records:
                    self._news.set()
                    self._news = anyio.Event()
                if len(records) == TAIL_BATCH:
                    continue  # catching up
                if self._awaiting_results():
                    await anyio.sleep(TAIL_GAP_S)  # one look per gap, not one per commit
                else:
                    with anyio.move_on_after(TAIL_IDLE_S):
                        await self._submitted.wait()
                    self._submitted = anyio.Event()
        finally:
            with anyio.CancelScope(shield=True):
                await consumer.close()

    def _awaiting_results(self) -> bool:
        """Whether a request logged here still awaits its final result."""
        if self._outstanding:
            late = now_ns() - OUTSTANDING_GRACE_NS
            for rid in [r for r, deadline in self._outstanding.items() if deadline < late]:
                del self._outstanding[rid]  # its session never answered (e.g. removed by a reload)
        return bool(self._outstanding)

    def _learn_request(self, req: CommandRequest) -> None:
        if req.request_id in self.known:
            return
        self.known[req.request_id] = _Known(request=req)
        self.last[(req.asset_id, req.parameter)] = req.request_id
        while len(self.known) > MAX_KNOWN:
            self.known.popitem(last=False)

    def _learn_result(self, res: CommandResult) -> None:
        known = self.known.get(res.request_id)
        if known is None:
            return  # its request is older than what the root remembers
        known.steps.append(res)
        if res.status is not CommandStatus.ACCEPTED:
            self._outstanding.pop(res.request_id, None)
        if res.read_back is not None and res.status in (
            CommandStatus.WRITTEN, CommandStatus.MISMATCH
        ):
            self.read_back[(res.asset_id, res.parameter)] = (res.read_back, res.gateway_time)

    # -- the shadow -------------------------------------------------------------------
    def points(self, caller: Caller) -> list[dict[str, Any]]:
        """The writable points of the assets in ``caller``'s scope, with their
        limits and whether the caller's role may write them (for a surface to grey
        out its form: ``submit`` decides)."""
        return [
            {
                "asset_id": asset, "parameter": param, "role": spec.role.value,
                "min": spec.min, "max": spec.max, "allowed": spec.allowed,
                "can_write": check_role(spec, caller.role.value) is None,
            }
            for (asset, param), (_adapter, spec) in sorted(self.index().items())
            if caller.in_scope(asset)
        ]

    async def shadow(self, asset: str) -> dict[str, Any]:
        """Reported / desired / delta of ``asset``'s writable points."""
        params = sorted(p for (a, p) in self.index() if a == asset)
        if not params:
            raise WriteRefused(404, f"asset {asset} has no writable points")
        reported: dict[str, dict[str, Any]] = {}
        for p, (value, t) in self.read_back.items():
            if p[0] == asset and p[1] in params:
                reported[p[1]] = {"value": value, "time": t, "source": "read_back"}
        for r in await self._raw_tail(asset, set(params)):
            seen = reported.get(r.parameter)
            if seen is None or r.gateway_time > seen["time"]:
                reported[r.parameter] = {
                    "value": r.value, "quality": r.quality.value, "time": r.gateway_time,
                    "source": "reading",
                }
        desired: dict[str, dict[str, Any]] = {}
        delta: dict[str, Any] = {}
        for p in params:
            rid = self.last.get((asset, p))
            if rid is None or rid not in self.known:
                continue
            view = self.known[rid].view()
            desired[p] = {k: view[k] for k in ("value", "request_id", "status", "by")}
            desired[p]["time"] = self.known[rid].request.gateway_time
            got = reported.get(p)
            if got is None or got["value"] != view["value"]:
                delta[p] = view["value"]
        return {"asset_id": asset, "reported": reported, "desired": desired, "delta": delta}

    async def _raw_tail(self, asset: str, params: set[str]) -> list[Reading]:
        backend = await self.gateway.oplog.backend()
        decoder = self.gateway.oplog.decoder
        if not hasattr(backend, "watermarks") or decoder is None:
            return []
        key = asset.encode()
        newest: dict[str, Reading] = {}
        for topic in RAW_TOPICS:
            for partition, (start, end) in (await backend.watermarks(topic)).items():
                first = max(start, end - SHADOW_SCAN)
                for rec in await backend.read(topic, partition, first, end - first):
                    if rec.key != key:
                        continue
                    r = await decoder.decode_async(topic, rec.value)
                    if r.parameter in params and r.value is not None:
                        old = newest.get(r.parameter)
                        if old is None or r.gateway_time >= old.gateway_time:
                            newest[r.parameter] = r
        return list(newest.values())
