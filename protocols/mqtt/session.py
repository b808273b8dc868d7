"""The MQTT device-session actor: subscribe, map payloads, reconnect forever.

One actor per broker connection. Each connection cycle builds a fresh
aiomqtt Client with the same client id; with ``clean_session = false`` the
broker keeps the session (subscriptions and queued QoS 1 messages) while the
gateway is away, so a reconnect resumes where it left off. Subscriptions are
re-sent on every connect anyway, so a broker that lost its state (restart
without persistence) is handled too.

Messages are decoded by ``mapping`` and published in batches: the session
drains what the client has queued, then awaits one ``publish``. A payload that
does not fit its mapping gives BAD readings with a reason in the
``mqtt_bad_payload`` log event; the session keeps flowing.

QoS 1 messages are acknowledged after their readings were accepted by the
log (``ack = "after_log"``, the default): a crash in between makes the broker
redeliver them (duplicates are possible, loss is not). What can be lost: QoS 0
messages while disconnected; with ``ack = "on_receipt"``, QoS 1 messages read
but not yet in the log when the process dies; messages beyond
``max_queued_messages`` while the log pushes back (only with on_receipt: with
after_log the broker's in-flight window stops first); everything queued when
the broker itself restarts without persistence.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time

import aiomqtt
import anyio

from otgate import __version__
from otgate.actors.actor import Actor, describe
from otgate.actors.context import BuildContext
from otgate.actors.messages import State
from otgate.protocols.mqtt.config import AckPolicy, MqttSource
from otgate.protocols.mqtt.mapping import Router
from otgate.protocols.opcua.emitter import Emitter
from otgate.protocols.reconnect import deciding_error, wait_before_reconnect

log = logging.getLogger("otgate.protocols.mqtt")

# CONNACK codes that no retry can fix (MQTT 3.1.1: 1, 2, 4, 5; MQTT 5: 0x80+).
_PERMANENT_CONNACK = {1, 2, 4, 5, 0x84, 0x85, 0x86, 0x87, 0x8C}
_LOG_EVERY = 100  # bad-payload log events: the first, then one per this many


def is_retriable(exc: BaseException) -> bool:
    """Whitelist: network errors and broker unavailability; not auth/protocol refusals."""
    if isinstance(exc, aiomqtt.MqttCodeError):
        rc = exc.rc
        code = rc if isinstance(rc, int) else getattr(rc, "value", None)
        return code not in _PERMANENT_CONNACK
    return isinstance(exc, aiomqtt.MqttError | OSError | TimeoutError)


def leaf_error(exc: BaseException) -> BaseException:
    """The deciding error of a failed connection (see ``deciding_error``)."""
    return deciding_error(exc, is_retriable)


def tls_context(cfg: MqttSource) -> ssl.SSLContext | None:
    if cfg.tls is None:
        return None
    ctx = ssl.create_default_context(cafile=cfg.tls.ca_file)
    if cfg.tls.cert_file:
        ctx.load_cert_chain(cfg.tls.cert_file, cfg.tls.key_file)
    if not cfg.tls.verify_hostname:
        ctx.check_hostname = False
    return ctx


class MqttSession(Actor):
    """Device session for one MQTT broker connection (see the module doc)."""

    kind = "mqtt_session"

    def __init__(self, cfg: MqttSource, ctx: BuildContext) -> None:
        super().__init__(cfg.id)
        self.cfg = cfg
        self.router = Router(cfg)
        self.emitter = Emitter(
            adapter_id=cfg.id,
            adapter_version=f"otgate-mqtt/{__version__}",
            publish=ctx.publish,
            batch_max=cfg.batch_max,
        )
        self.connects = 0
        self.connect_failures = 0
        self.connections_lost = 0
        self.messages = 0
        self.messages_unmapped = 0
        self.bad_payloads = 0
        self._connected = False

    def metrics(self) -> dict[str, float]:
        return {
            "connected": 1.0 if self._connected else 0.0,
            "connects": float(self.connects),
            "connect_failures": float(self.connect_failures),
            "connections_lost": float(self.connections_lost),
            "messages": float(self.messages),
            "messages_unmapped": float(self.messages_unmapped),
            "bad_payloads": float(self.bad_payloads),
            "readings_published": float(self.emitter.published),
            "readings_bad": float(self.emitter.bad),
            "readings_suppressed": float(self.emitter.suppressed),
        }

    async def main(self) -> None:
        self.state = State.DEGRADED
        attempt = 0
        down_since = time.monotonic()
        while True:
            try:
                await self._cycle(attempt, down_since)
            except Exception as exc:
                err = leaf_error(exc)
                if not is_retriable(err):
                    log.error("adapter_failed adapter_id=%s error=%s", self.id, describe(err)[:200])
                    raise err from None
                self.last_error = describe(err)[:200]
                if self._connected:
                    self._connected = False
                    self.connections_lost += 1
                    self.state = State.DEGRADED
                    log.warning(
                        "adapter_disconnected adapter_id=%s error=%s", self.id, self.last_error
                    )
                    attempt = 0
                    down_since = time.monotonic()
                else:
                    self.connect_failures += 1
            else:  # the broker ended the stream cleanly; treat like a loss
                self._connected = False
                self.state = State.DEGRADED
            attempt += 1
            await wait_before_reconnect(
                self.id,
                attempt,
                self.cfg.reconnect_min_s,
                self.cfg.reconnect_max_s,
                self.last_error,
            )

    def _client(self) -> aiomqtt.Client:
        cfg = self.cfg
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=cfg.effective_client_id,
            clean_session=cfg.clean_session,
            username=cfg.username,
            password=cfg.password,
            keepalive=cfg.keepalive_s,
            timeout=cfg.connect_timeout_s,
            tls_context=tls_context(cfg),
            tls_insecure=(cfg.tls is not None and not cfg.tls.verify_hostname) or None,
            max_queued_incoming_messages=cfg.max_queued_messages,
            logger=logging.getLogger("otgate.protocols.mqtt.paho"),
        )

    async def _cycle(self, attempt: int, down_since: float) -> None:
        """Connect, subscribe, consume until the connection drops (raises MqttError)."""
        client = self._client()
        manual_ack = self.cfg.ack is AckPolicy.AFTER_LOG
        if manual_ack:
            # aiomqtt has no option for it; paho's public switch on its client.
            client._client.manual_ack_set(True)
        try:
            # aiomqtt bounds the CONNACK wait with ``timeout`` (raising MqttError);
            # the outer limit only guards the executor-thread TCP connect.
            with anyio.fail_after(self.cfg.connect_timeout_s * 2):
                await client.__aenter__()
        except BaseException:
            # A failed or cancelled connect can leave paho's socket open; paho's
            # own disconnect() closes it through its normal path.
            with contextlib.suppress(Exception):
                client._client.disconnect()
            raise
        try:
            with anyio.fail_after(self.cfg.connect_timeout_s):
                await client.subscribe([(s.topic, s.qos) for s in self.cfg.subscriptions])
            self._connected = True
            self.connects += 1
            self.state = State.RUNNING
            log.info(
                "adapter_connected adapter_id=%s host=%s port=%d client_id=%s"
                " attempt=%d after_s=%.2f",
                self.id,
                self.cfg.host,
                self.cfg.port,
                self.cfg.effective_client_id,
                attempt,
                time.monotonic() - down_since,
            )
            await self._consume(client, manual_ack)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                try:
                    await client.__aexit__(None, None, None)
                except aiomqtt.MqttError:
                    pass  # already disconnected: nothing to close

    async def _consume(self, client: aiomqtt.Client, manual_ack: bool) -> None:
        """Handle what the client has queued, publish it, then acknowledge it."""
        queue = client._queue  # aiomqtt has no public non-blocking get
        paho = client._client
        handle = self._handle
        pending_acks: list[tuple[int, int]] = []
        async for message in client.messages:
            handle(message)
            if manual_ack and message.qos:
                pending_acks.append((message.mid, message.qos))
            while not queue.empty() and not self.emitter.full:
                message = queue.get_nowait()
                handle(message)
                if manual_ack and message.qos:
                    pending_acks.append((message.mid, message.qos))
            await self.emitter.flush()
            for mid, qos in pending_acks:
                paho.ack(mid, qos)
            pending_acks.clear()

    def _handle(self, message: aiomqtt.Message) -> None:
        self.messages += 1
        topic = message.topic.value
        levels, subs = self.router.route(topic)
        if not subs:
            self.messages_unmapped += 1
            return
        body = message.payload
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes | bytearray):
            body = b"" if body is None else str(body).encode()
        add = self.emitter.add
        for sub in subs:
            points, device_time, reason = sub.decode(levels, body)
            if reason is not None:
                self.messages_unmapped += 1
                self._bad(topic, reason)
                continue
            bad_reason = None
            for meta, value, quality, why in points:
                add(meta, value, quality, device_time)
                if why is not None:
                    bad_reason = why
            if bad_reason is not None:
                self._bad(topic, bad_reason)

    def _bad(self, topic: str, reason: str) -> None:
        self.bad_payloads += 1
        if self.bad_payloads % _LOG_EVERY == 1:
            log.warning(
                "mqtt_bad_payload adapter_id=%s topic=%s reason=%s count=%d",
                self.id,
                topic,
                reason,
                self.bad_payloads,
            )
