"""The alarm scenario's peers: devices that drive an alarm on a schedule, the
operator who acks every activation over HTTP, and the webhook the alert router
notifies (with its faults). What they saw is what ``alarm_check`` compares."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import anyio
from aiohttp import web

from otgate.simulations.alert_receivers import WebhookReceiver
from otgate.simulations.harness.scenario import Alarms

log = logging.getLogger("otgate.harness")
LIMIT = 80.0
HIGH, LOW = 100, 20
DEFINITION = "hot"
PARAMETER = "temp"


def alarm_id(device: str) -> str:
    return f"{device}:{PARAMETER}:{DEFINITION}"


class AlarmDevice:
    """Publishes ``{"seq": n, "temp": v, "ts": epoch_ms}`` at QoS 1 to
    ``harness/<id>/alarm``: ``temp`` is LOW for ``low_s`` (shifted by ``offset_s``
    at the start), then HIGH for ``high_s``, and so on; the last sample is LOW.

    ``levels`` holds, in order, whether each sample the broker acknowledged was
    above the limit: the alarm's raises and clears follow from it alone (the
    gateway's persistent QoS 1 session gets every acknowledged sample)."""

    def __init__(self, device_id: str, cfg: Alarms, offset_s: float) -> None:
        self.id = device_id
        self.cfg = cfg
        self.offset_s = offset_s
        self.port = 0
        self.levels: list[bool] = []

    @property
    def produced(self) -> int:
        return len(self.levels)

    def high_at(self, elapsed: float) -> bool:
        period = self.cfg.low_s + self.cfg.high_s
        return (elapsed + self.offset_s) % period >= self.cfg.low_s

    async def run(self, until: float) -> None:
        t0 = time.monotonic()
        while not self.levels or self.levels[-1] or time.monotonic() < until:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port,
                                          identifier=f"dev-{self.id}") as c:
                    while not self.levels or self.levels[-1] or time.monotonic() < until:
                        now = time.monotonic()
                        high = now < until and self.high_at(now - t0)
                        body = json.dumps({"seq": self.produced + 1, "temp": HIGH if high else LOW,
                                           "ts": time.time_ns() // 1_000_000})
                        await c.publish(f"harness/{self.id}/alarm", body, qos=1)
                        self.levels.append(high)
                        await anyio.sleep(self.cfg.interval_s)
            except aiomqtt.MqttError as exc:
                log.info("harness_device_offline device=%s error=%s", self.id, exc)
                await anyio.sleep(0.5)

    def edges(self) -> tuple[int, int]:
        """Raises and clears the samples call for (the alarm starts NORMAL)."""
        raises = clears = 0
        before = False
        for high in self.levels:
            raises += high and not before
            clears += before and not high
            before = high
        return raises, clears


@dataclass
class AckAnswer:
    """The gateway's answer to one ack request (``ack-<occurrence_id>``)."""

    status: str  # applied | refused | unchanged
    transitions: list[dict[str, Any]]
    attempts: int
    refused: dict[str, str] = field(default_factory=dict)  # alarm id -> the evaluator's reason


@dataclass
class Acker:
    """An operator who acknowledges every activation of the alarms it watches through
    ``POST /alarms/ack`` with request id ``ack-<occurrence_id>``, ``ack_after_s``
    after first seeing it unacknowledged, retrying the same request id (gateway
    down, 5xx, 202 accepted-but-unanswered) until the gateway answers it. The
    request names the activation (``occurrence_ids``): once the alarm has been
    raised again, the evaluator refuses it instead of acking the new activation."""

    url: Any  # () -> the gateway's status URL (it changes when the gateway restarts)
    token: str
    alarm_ids: set[str]
    ack_after_s: float
    seen: dict[str, float] = field(default_factory=dict)  # occurrence -> first seen unacked
    answers: dict[str, AckAnswer] = field(default_factory=dict)  # by occurrence
    attempts: dict[str, int] = field(default_factory=dict)
    errors: int = 0

    def pending(self) -> list[str]:
        return [o for o in self.seen if o not in self.answers]

    async def run(self, poll_s: float = 0.2) -> None:
        while True:
            await self.step()
            await anyio.sleep(poll_s)

    async def step(self) -> None:
        try:
            rows = await anyio.to_thread.run_sync(self._call, "GET", "/alarms", None)
        except OSError:
            self.errors += 1
            return
        now = time.monotonic()
        for row in rows.get("alarms", []) if isinstance(rows, dict) else []:
            if row["alarm_id"] in self.alarm_ids and not row["acked"]:
                self.seen.setdefault(row["occurrence_id"], now)
        for occ in self.pending():
            if now - self.seen[occ] >= self.ack_after_s:
                await self._ack(occ)

    async def _ack(self, occ: str) -> None:
        aid = occ.rsplit("#", 1)[0]
        body = {"alarm_ids": [aid], "occurrence_ids": {aid: occ}, "request_id": f"ack-{occ}",
                "wait_s": 5.0, "note": "harness operator"}
        self.attempts[occ] = self.attempts.get(occ, 0) + 1
        try:
            doc = await anyio.to_thread.run_sync(self._call, "POST", "/alarms/ack", body)
        except OSError:  # the gateway is away, or answered 5xx / 202: ask again
            self.errors += 1
            return
        self.answers[occ] = AckAnswer(doc["status"], doc["transitions"], self.attempts[occ],
                                      doc.get("refused", {}))

    def _call(self, method: str, path: str, body: dict | None) -> Any:
        req = urllib.request.Request(
            self.url() + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status != 200:  # 202: written, not answered within wait_s
                raise OSError(f"HTTP {resp.status}")
            return json.loads(resp.read())


@dataclass
class Delivery:
    """One request the webhook accepted (2xx)."""

    key: str
    at: float  # monotonic, when it arrived
    replied: bool  # the answer went out before the router gave up on it


class HarnessWebhook(WebhookReceiver):
    """The webhook peer: a ``WebhookReceiver`` that also logs every acceptance
    (``deliveries``) and can be stopped (``stop_for``: connections refused, open
    ones closed), failing (``fail``: 503) or slow (``slow``: accepts, answers late)."""

    def __init__(self) -> None:
        super().__init__()
        # the demo logs each request at WARNING for its reader; the harness prints a verdict
        logging.getLogger("otgate.simulations.alerts").setLevel(logging.ERROR)
        self.deliveries: list[Delivery] = []
        self._stop = anyio.Event()
        self._down_s = 0.0

    async def handle(self, req: web.Request) -> web.Response:
        at = time.monotonic()
        resp = await super().handle(req)
        if resp.status < 300:
            closed = req.transport is None or req.transport.is_closing()
            self.deliveries.append(Delivery(req.headers.get("Idempotency-Key", ""), at,
                                            not closed))
        return resp

    def stop_for(self, seconds: float) -> None:
        self._down_s = seconds
        self._stop.set()

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        port = 0
        while True:
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
            await runner.setup()
            try:
                await web.TCPSite(runner, "127.0.0.1", port).start()
                if not port:
                    port = runner.addresses[0][1]
                    task_status.started(f"http://127.0.0.1:{port}")
                await self._stop.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    await runner.cleanup()
            self._stop = anyio.Event()
            await anyio.sleep(self._down_s)
