"""The OPC UA device-session actor: connect, subscribe (or poll), reconnect forever.

One actor per configured server. ``main`` runs connection cycles: build a
fresh asyncua Client, connect, create the subscription and its monitored
items (or start polling), turn notifications into Readings until the
connection is lost, then back off and start over with a NEW session and NEW
subscriptions — nothing from the old session is reused, so a restarted
server (which forgot every session) is handled like a first connect.

While disconnected the actor is DEGRADED. Errors outside the retriable
whitelist (``client.is_retriable``: bad credentials, rejected certificates,
unknown node ids at connect) end the actor so its supervisor sees them.

Writes: with writable points (and a log), a ``CommandRunner`` runs beside the
connection cycles and executes write requests on the current connection
(``write.py``; asyncua multiplexes requests, so reads keep flowing).

What can be lost: values that change and change back while the connection
is down; in polling mode, changes between polls; when the log pushes back for
longer than ``client_queue_size`` notifications, the oldest notifications.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import anyio
from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, StatusChangeEvent

from otgate import __version__
from otgate.actors.actor import Actor, StartupError
from otgate.actors.context import BuildContext
from otgate.actors.messages import State
from otgate.actors.records import Quality
from otgate.protocols.commands import CommandRunner
from otgate.protocols.opcua.client import (
    NO_SUBSCRIPTION_STATUS,
    ConnectionLost,
    is_retriable,
    make_client,
    status_of,
)
from otgate.protocols.opcua.config import DeadbandType, DisconnectPolicy, Mode, OpcUaSource
from otgate.protocols.opcua.convert import unpack
from otgate.protocols.opcua.emitter import Emitter, PointMeta
from otgate.protocols.opcua.write import OpcUaWriter, writable_points
from otgate.protocols.reconnect import deciding_error, wait_before_reconnect

log = logging.getLogger("otgate.protocols.opcua")


class _QuietLostConnection(logging.Filter):
    """asyncua logs every lost connection as an ERROR traceback from its publish
    loop; the session reports the loss itself (``adapter_disconnected``), so
    those records are dropped. Other errors of that loop still get through."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionError | TimeoutError | OSError)


logging.getLogger("asyncua.client.ua_session.UaSession").addFilter(_QuietLostConnection())

_CLIENT_HANDLE_BASE = 1000
_MAX_ITEMS_PER_CREATE = 1000


def leaf_error(exc: BaseException) -> BaseException:
    """The deciding error of a failed connection (see ``deciding_error``)."""
    return deciding_error(exc, is_retriable)


class OpcUaSession(Actor):
    """Device session for one OPC UA server (see the module doc for semantics)."""

    kind = "opcua_session"

    def __init__(self, cfg: OpcUaSource, ctx: BuildContext) -> None:
        super().__init__(cfg.id)
        self.cfg = cfg
        self.emitter = Emitter(
            adapter_id=cfg.id,
            adapter_version=f"otgate-opcua/{__version__}",
            publish=ctx.publish,
            batch_max=cfg.batch_max,
        )
        self.points = [
            PointMeta(p.asset_id, p.parameter, p.unit, p.classification) for p in cfg.points
        ]
        self.node_ids: list[ua.NodeId] = []
        self._nodes: list[Any] = []
        self.mode_active: Mode | None = None
        self.connects = 0
        self.connect_failures = 0
        self.connections_lost = 0
        self.notifications = 0
        self.polls = 0
        self.items_rejected = 0
        self.queue_high_water = 0
        self._connected_at: float | None = None
        self.client: Client | None = None  # the connected client, for writes
        self.write_requests = 0
        writable = writable_points(cfg)
        self.commands: CommandRunner | None = None
        if writable and ctx.log is not None:
            writer = OpcUaWriter(self)
            self.commands = CommandRunner(self.id, writable, ctx, writer.execute, writer.reachable)

    # -- actor hooks ------------------------------------------------------------
    async def setup(self) -> None:
        try:
            self.node_ids = [ua.NodeId.from_string(p.node_id) for p in self.cfg.points]
        except Exception as exc:  # asyncua raises several types for malformed ids
            raise StartupError(f"{self.id}: invalid node id: {exc}", retriable=False) from exc

    def metrics(self) -> dict[str, float]:
        writes = self.commands.metrics() if self.commands is not None else {}
        return {
            **writes,
            "write_requests": float(self.write_requests),
            "connected": 1.0 if self._connected_at is not None else 0.0,
            "connects": float(self.connects),
            "connect_failures": float(self.connect_failures),
            "connections_lost": float(self.connections_lost),
            "notifications": float(self.notifications),
            "polls": float(self.polls),
            "items_rejected": float(self.items_rejected),
            "readings_published": float(self.emitter.published),
            "readings_bad": float(self.emitter.bad),
            "readings_suppressed": float(self.emitter.suppressed),
            "client_queue_high_water": float(self.queue_high_water),
            "mode_polling": 1.0 if self.mode_active is Mode.POLLING else 0.0,
        }

    async def main(self) -> None:
        if self.commands is None:
            await self._connect_forever()
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.commands.run)
            await self._connect_forever()

    async def _connect_forever(self) -> None:
        self.state = State.DEGRADED
        attempt = 0
        down_since = time.monotonic()
        while True:
            try:
                await self._cycle(attempt, down_since)
                raise ConnectionLost("session ended")
            except Exception as exc:
                err = leaf_error(exc)
                if not is_retriable(err):
                    log.error(
                        "adapter_failed adapter_id=%s error=%s",
                        self.id,
                        _describe(err),
                    )
                    raise err from None
                self.last_error = _describe(err)
                if self._connected_at is not None:
                    await self._on_lost(err)
                    attempt = 0
                    down_since = time.monotonic()
                else:
                    self.connect_failures += 1
                attempt += 1
                await wait_before_reconnect(
                    self.id,
                    attempt,
                    self.cfg.reconnect_min_s,
                    self.cfg.reconnect_max_s,
                    self.last_error,
                )

    # -- one connection ---------------------------------------------------------
    async def _cycle(self, attempt: int, down_since: float) -> None:
        """Connect, read until the connection is lost (raises), always disconnect."""
        client = await make_client(self.cfg)
        lost = anyio.Event()

        async def on_lost(exc: Exception) -> None:
            lost.set()

        client.connection_lost_callback = on_lost
        try:
            with anyio.fail_after(self.cfg.connect_timeout_s):
                await client.connect()
                reader = await self._open(client)
            self.connects += 1
            self._connected_at = time.monotonic()
            self.client = client
            self.state = State.RUNNING
            log.info(
                "adapter_connected adapter_id=%s endpoint=%s mode=%s attempt=%d after_s=%.2f",
                self.id,
                self.cfg.endpoint,
                self.mode_active.value if self.mode_active else "?",
                attempt,
                time.monotonic() - down_since,
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, client, lost)
                await reader()
        finally:
            self.client = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                # Teardown of a dead connection fails in many ways; none of them matter.
                with contextlib.suppress(Exception):
                    await client.disconnect()

    async def _watch(self, client: Client, lost: anyio.Event) -> None:
        """Raise ConnectionLost when asyncua's watchdog or transport reports a loss."""
        while True:
            with anyio.move_on_after(self.cfg.watchdog_interval_s):
                await lost.wait()
            if lost.is_set() or client.uaclient.state is not UaClientState.CONNECTED:
                raise ConnectionLost("connection to server lost")

    async def _on_lost(self, err: BaseException) -> None:
        self._connected_at = None
        self.connections_lost += 1
        self.state = State.DEGRADED
        log.warning("adapter_disconnected adapter_id=%s error=%s", self.id, _describe(err))
        if self.cfg.on_disconnect is DisconnectPolicy.MARK_BAD:
            for point in self.points:
                self.emitter.add(point, None, Quality.BAD, None)
            await self.emitter.flush()

    async def _open(self, client: Client) -> Any:
        """Create the subscription (or choose polling); return the read loop to run."""
        mode = self.cfg.mode
        if mode is not Mode.POLLING:
            try:
                sub = await self._subscribe(client)
            except ua.UaStatusCodeError as exc:
                if mode is Mode.AUTO and status_of(exc) in NO_SUBSCRIPTION_STATUS:
                    log.warning(
                        "opcua_polling_fallback adapter_id=%s status=%s",
                        self.id,
                        ua.StatusCode(status_of(exc)).name,
                    )
                    mode = Mode.POLLING
                else:
                    raise
            else:
                self.mode_active = Mode.SUBSCRIPTION
                return lambda: self._consume(sub)
        self.mode_active = Mode.POLLING
        self._nodes = [client.get_node(n) for n in self.node_ids]
        await self._read_all(client)  # connected means "the server answers reads"
        return lambda: self._poll(client)

    async def _subscribe(self, client: Client) -> Any:
        cfg = self.cfg
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = cfg.publishing_interval_ms
        params.RequestedLifetimeCount = 10_000
        params.RequestedMaxKeepAliveCount = client.get_keepalive_count(cfg.publishing_interval_ms)
        params.MaxNotificationsPerPublish = 10_000
        params.PublishingEnabled = True
        params.Priority = 0
        sub = await client.create_subscription(
            params, queue_maxsize=cfg.client_queue_size, overflow=OverflowPolicy.DROP_OLDEST
        )
        requests = [self._item_request(i) for i in range(len(self.points))]
        results: list[Any] = []
        for start in range(0, len(requests), _MAX_ITEMS_PER_CREATE):
            results += await sub.create_monitored_items(
                requests[start : start + _MAX_ITEMS_PER_CREATE]
            )
        for i, result in enumerate(results):
            if isinstance(result, ua.StatusCode):
                self.items_rejected += 1
                log.warning(
                    "opcua_item_rejected adapter_id=%s node_id=%s status=%s",
                    self.id,
                    self.cfg.points[i].node_id,
                    result.name,
                )
                self.emitter.add(self.points[i], None, Quality.BAD, None)
        await self.emitter.flush()
        return sub

    def _item_request(self, i: int) -> ua.MonitoredItemCreateRequest:
        point, cfg = self.cfg.points[i], self.cfg
        rv = ua.ReadValueId()
        rv.NodeId = self.node_ids[i]
        rv.AttributeId = ua.AttributeIds.Value
        mparams = ua.MonitoringParameters()
        mparams.ClientHandle = _CLIENT_HANDLE_BASE + i
        mparams.SamplingInterval = (
            point.sampling_interval_ms
            if point.sampling_interval_ms is not None
            else cfg.sampling_interval_ms
        )
        mparams.QueueSize = point.queue_size if point.queue_size is not None else cfg.queue_size
        mparams.DiscardOldest = True
        if point.deadband_type is not DeadbandType.NONE:
            flt = ua.DataChangeFilter()
            flt.Trigger = ua.DataChangeTrigger.StatusValue
            flt.DeadbandType = 1 if point.deadband_type is DeadbandType.ABSOLUTE else 2
            flt.DeadbandValue = point.deadband
            mparams.Filter = flt
        req = ua.MonitoredItemCreateRequest()
        req.ItemToMonitor = rv
        req.MonitoringMode = ua.MonitoringMode.Reporting
        req.RequestedParameters = mparams
        return req

    async def _consume(self, sub: Any) -> None:
        """Turn subscription events into readings; flush after each burst."""
        use_source = self.cfg.timestamp.value == "source"
        # asyncua 2.x has no public batch get; drain its queue directly so one
        # burst of notifications becomes one publish call.
        queue = sub._event_queue
        while True:
            event = await sub.next_event()
            depth = queue.qsize() + 1
            if depth > self.queue_high_water:
                self.queue_high_water = depth
            while True:
                self._handle(event, use_source)
                if queue.empty():
                    break
                event = queue.get_nowait()
                if event is None:  # the subscription was closed under us
                    raise ConnectionLost("subscription closed")
            await self.emitter.flush()

    def _handle(self, event: Any, use_source: bool) -> None:
        if isinstance(event, DataChangeEvent):
            item = event.data.monitored_item
            index = item.ClientHandle - _CLIENT_HANDLE_BASE
            if not 0 <= index < len(self.points):
                return
            self.notifications += 1
            value, quality, device_time, reason = unpack(item.Value, use_source)
            if reason is not None:
                log.warning(
                    "opcua_bad_value adapter_id=%s node_id=%s reason=%s",
                    self.id,
                    self.cfg.points[index].node_id,
                    reason,
                )
            self.emitter.add(self.points[index], value, quality, device_time)
        elif isinstance(event, StatusChangeEvent):
            status = event.notification.Status
            if status is not None and not status.is_good():
                raise ConnectionLost(f"subscription status {status.name}")

    async def _read_all(self, client: Client) -> None:
        """One poll: read every point (``max_nodes_per_read`` per request), publish."""
        cfg = self.cfg
        use_source = cfg.timestamp.value == "source"
        nodes = self._nodes
        step = cfg.max_nodes_per_read
        for start in range(0, len(nodes), step):
            values = await client.read_attributes(nodes[start : start + step])
            for offset, dv in enumerate(values):
                index = start + offset
                value, quality, device_time, reason = unpack(dv, use_source)
                if reason is not None:
                    log.warning(
                        "opcua_bad_value adapter_id=%s node_id=%s reason=%s",
                        self.id,
                        cfg.points[index].node_id,
                        reason,
                    )
                self.emitter.add(self.points[index], value, quality, device_time)
        self.polls += 1
        await self.emitter.flush()

    async def _poll(self, client: Client) -> None:
        """Poll every ``poll_interval_s`` (drift-free; the first poll ran in ``_open``)."""
        interval = self.cfg.poll_interval_s
        next_at = time.monotonic() + interval
        while True:
            now = time.monotonic()
            if next_at < now:  # overran: skip missed ticks instead of bursting
                next_at = now
            await anyio.sleep(next_at - now)
            await self._read_all(client)
            next_at += interval


def _describe(exc: BaseException) -> str:
    code = status_of(exc)
    if code is not None:
        return f"{type(exc).__name__}({ua.StatusCode(code).name})"
    return f"{type(exc).__name__}: {exc}"[:200]
