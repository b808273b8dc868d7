"""The alert router against real peers: an aiohttp webhook that fails then recovers,
an aiosmtpd server with STARTTLS and login (digest contents, escalation timing),
a permanent refusal (DLQ) and a restart with a pending escalation."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

import anyio
import pytest
from alarm_records import AlarmDriver, router_config
from peers.alerts import SMTP_PASSWORD, SMTP_USER, authenticator, self_signed
from stage_log import read_all, wait_until

from otgate.actors.breaker import BreakerState
from otgate.actors.context import BuildContext
from otgate.actors.log.base import TopicSpec
from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.messages import State
from otgate.actors.records import AlarmSeverity
from otgate.actors.stage_codec import LogCodec
from otgate.simulations.alert_receivers import (
    SmtpReceiver,
    SmtpReceiverConfig,
    WebhookReceiver,
    WebhookReceiverConfig,
)
from otgate.simulations.postgres_server import free_port
from otgate.sinks.alert_router.actor import AlertRouterActor

TOPIC = "alarms.clean"


@asynccontextmanager
async def alarm_log(tmp):
    lg = EmbeddedLog(tmp / "log.sqlite")
    await lg.start()
    await lg.ensure_topics([TopicSpec(name=t) for t in (TOPIC, "dlq.events")])
    codec = LogCodec(EmbeddedSchemaStore(lg))
    await codec.prepare([TOPIC, "dlq.events"])
    try:
        yield lg, codec
    finally:
        await lg.close()


async def append(lg, codec, alarms) -> None:
    await lg.append(TOPIC, [(a.asset_id.encode(), codec.encode(TOPIC, a)) for a in alarms])


async def uncommitted(lg, group: str) -> int:
    """Records the group has not committed (a fresh member reads from the commit)."""
    c = lg.consumer(group, [TOPIC])
    try:
        return len(await c.fetch(10_000, 0.05))
    finally:
        await c.close()


def hook(dest_id: str, url: str, **kw) -> dict:
    return {"type": "webhook", "id": dest_id, "url": url, **kw}


FAST = dict(fetch_timeout_s=0.05, retry_initial_s=0.05, retry_max_s=0.2,
            breaker_failures=2, breaker_cooldown_s=0.5, dedupe_window="0s")


@pytest.mark.anyio
async def test_webhook_outage_breaker_retry_and_no_duplicate_per_transition(tmp_path):
    flaky, healthy = WebhookReceiver(), WebhookReceiver()
    async with alarm_log(tmp_path) as (lg, codec), anyio.create_task_group() as tg:
        flaky_url = await tg.start(flaky.serve, WebhookReceiverConfig(port=0))
        healthy_url = await tg.start(healthy.serve, WebhookReceiverConfig(port=0))
        cfg = router_config(
            id="alerts", **FAST,
            destinations=[hook("ops", flaky_url + "/ops"),
                          hook("chat", healthy_url + "/chat", format="slack")],
            routes=[{"severity": "CRITICAL", "destinations": ["ops", "chat"]}],
        )
        ctx = BuildContext(gateway_id="gw", publish=None, state_dir=tmp_path, log=lg,
                           extras={"codec": codec})
        router = cfg.build(ctx)
        assert isinstance(router, AlertRouterActor)
        flaky.down = True
        drivers = [AlarmDriver(f"a{i}") for i in range(5)]
        await append(lg, codec, [d.raise_() for d in drivers])
        await tg.start(router.run)
        await append(lg, codec, [d.ack() for d in drivers])
        await append(lg, codec, [d.clear() for d in drivers])

        async def chat_has_all() -> bool:
            return len(healthy.received) == 15 and router.dest_breakers["ops"].breaker_state \
                is BreakerState.OPEN

        await wait_until(chat_has_all)
        assert flaky.received == [] and flaky.attempts >= 2
        assert await uncommitted(lg, cfg.consumer_group) == 15  # ops has confirmed nothing
        assert router.metrics()["pending_notices"] == 15.0
        assert router.state is State.DEGRADED and router.last_error.startswith("ops: HTTP 503")
        assert "*CRITICAL raise: pump-1" in healthy.received[0]["text"]
        flaky.down = False

        async def ops_has_all() -> bool:
            return len(flaky.received) == 15 and await uncommitted(lg, cfg.consumer_group) == 0

        await wait_until(ops_has_all)
        snap = router.snapshot()
        tg.cancel_scope.cancel()
    assert flaky.duplicates() == 0 and healthy.duplicates() == 0
    assert sorted(flaky.keys) == sorted(f"a{i}:{s}" for i in range(5) for s in (1, 2, 3))
    assert flaky.paths == ["/ops"] * 15
    for i in range(5):  # per alarm in order: raise, ack, clear
        events = [b["alarms"][0]["event"] for b in flaky.received
                  if b["alarms"][0]["alarm_id"] == f"a{i}"]
        assert events == ["raise", "ack", "clear"]
    states = [t.to_state for t in router.dest_breakers["ops"].transitions()]
    assert BreakerState.OPEN in states and states[-1] is BreakerState.CLOSED
    assert snap.state is State.RUNNING
    assert [c.id for c in snap.children] == ["sink.alerts.ops", "sink.alerts.chat"]
    assert snap.metrics["sent_total"] == 30.0 and snap.metrics["send_failures_total"] >= 2


@pytest.mark.anyio
async def test_a_refused_notification_goes_to_the_dlq_and_the_rest_flows(tmp_path):
    peer = WebhookReceiver()
    peer.fail_status, peer.fail_next = 422, 1
    async with alarm_log(tmp_path) as (lg, codec):
        async with anyio.create_task_group() as tg:
            url = await tg.start(peer.serve, WebhookReceiverConfig(port=0))
            cfg = router_config(id="alerts", **FAST, destinations=[hook("ops", url)],
                                routes=[{"destinations": ["ops"]}])
            router = AlertRouterActor("sink.alerts", cfg, lg, codec)
            d = AlarmDriver("a1", severity=AlarmSeverity.HIGH)
            await append(lg, codec, [d.raise_(), d.ack(), d.clear()])
            await tg.start(router.run)

            async def settled() -> bool:
                return len(peer.received) == 2 and await uncommitted(lg, cfg.consumer_group) == 0

            await wait_until(settled)
            tg.cancel_scope.cancel()
        (dead,) = await read_all(lg, codec, "dlq.events")
    assert dead.reason == "rejected_by_destination" and dead.source_offset == 0
    assert dead.error.startswith("ops: HTTP 422") and dead.reading.seq == 1
    assert [b["key"] for b in peer.received] == ["a1:2", "a1:3"]
    assert router.dest_breakers["ops"].breaker_state is BreakerState.CLOSED


@pytest.mark.anyio
async def test_mail_over_starttls_with_login_digest_contents_and_escalation_timing(tmp_path):
    cert, server_tls = self_signed(tmp_path)
    mails, chat = SmtpReceiver(), WebhookReceiver()
    async with alarm_log(tmp_path) as (lg, codec), anyio.create_task_group() as tg:
        smtp = await tg.start(lambda task_status: mails.serve(
            SmtpReceiverConfig(port=0), tls_context=server_tls, authenticator=authenticator,
            task_status=task_status))
        chat_url = await tg.start(chat.serve, WebhookReceiverConfig(port=0))
        email = {"type": "email", "id": "oncall", "host": "127.0.0.1",
                 "port": int(smtp.rpartition(":")[2]), "tls": "starttls", "ca_file": str(cert),
                 "username": SMTP_USER, "password": SMTP_PASSWORD, "sender": "gw@plant.example",
                 "recipients": ["oncall@plant.example"], "timeout_s": 5}
        cfg = router_config(
            id="alerts", **FAST, digest_interval="1s",
            destinations=[hook("chat", chat_url), email],
            routes=[
                {"severity": "CRITICAL", "destinations": ["chat"], "escalate_after": "1500ms",
                 "escalate_to": ["oncall"]},
                {"severity": ["LOW", "INFO"], "destinations": ["oncall"]},
            ],
        )
        router = AlertRouterActor("sink.alerts", cfg, lg, codec, checkpoint=tmp_path / "ck")
        await tg.start(router.run)
        now = time.time()
        lows = [AlarmDriver(f"low{i}", asset_id=f"tank-{i}", severity=AlarmSeverity.LOW)
                for i in range(3)]
        late, prompt = AlarmDriver("late"), AlarmDriver("prompt")
        await append(lg, codec, [*(d.raise_(at=now) for d in lows), late.raise_(at=now),
                                 prompt.raise_(at=now), lows[0].clear(at=now)])
        await append(lg, codec, [prompt.ack(at=now + 0.2)])

        async def two_mails() -> bool:
            return len(mails.messages) >= 2 and len(chat.received) == 3

        await wait_until(two_mails)
        await anyio.sleep(1.0)  # room for a wrong extra mail (a second escalation) to arrive
        tg.cancel_scope.cancel()
    subjects = {m["Subject"]: (m, t) for m, t in zip(mails.messages, mails.arrived, strict=True)}
    assert len(mails.messages) == 2, list(subjects)
    (digest, _), = [v for k, v in subjects.items() if "Digest" in k]
    (esc, esc_at), = [v for k, v in subjects.items() if "ESCALATION" in k]
    assert digest["Subject"] == "[otgate] Digest: 4 LOW alarm transition(s)"
    body = digest.get_content()
    for i in range(3):
        assert f"LOW raise tank-{i}: tank-{i} pressure high" in body
    assert "LOW clear tank-0" in body
    assert esc["Subject"].startswith("[otgate] ESCALATION CRITICAL: pump-1 pump-1 pressure high")
    assert "late" in esc.get_content() and esc["X-Otgate-Key"] == "late:1:escalation:0"
    delay = esc_at - now
    print(f"escalation_delay_s={delay:.3f} (escalate_after 1.5 s, timer resolution 0.05 s)")
    assert 1.5 <= delay < 4.0


@pytest.mark.anyio
async def test_a_pending_escalation_survives_a_restart_and_nothing_is_sent_twice(tmp_path):
    peer = WebhookReceiver()
    async with alarm_log(tmp_path) as (lg, codec), anyio.create_task_group() as tg:
        url = await tg.start(peer.serve, WebhookReceiverConfig(port=0))
        cfg = router_config(
            id="alerts", **FAST,
            destinations=[hook("ops", url + "/ops"), hook("boss", url + "/boss")],
            routes=[{"destinations": ["ops"], "escalate_after": "2s", "escalate_to": ["boss"]}],
        )
        now = time.time()
        a, b = AlarmDriver("a"), AlarmDriver("b")
        await append(lg, codec, [a.raise_(at=now), b.raise_(at=now)])
        first = AlertRouterActor("sink.alerts", cfg, lg, codec, checkpoint=tmp_path / "ck")
        async with anyio.create_task_group() as run_first:
            await run_first.start(first.run)

            async def raised() -> bool:
                return len(peer.received) == 2 and await uncommitted(lg, cfg.consumer_group) == 0

            await wait_until(raised)
            run_first.cancel_scope.cancel()
        assert first.metrics()["escalations_pending"] == 2.0
        await append(lg, codec, [b.ack(at=now + 0.5)])  # acked while the router is down
        second = AlertRouterActor("sink.alerts", cfg, lg, codec, checkpoint=tmp_path / "ck")
        tg.start_soon(second.run)

        async def escalated() -> bool:
            return len(peer.received) == 4

        await wait_until(escalated)
        await anyio.sleep(0.5)
        tg.cancel_scope.cancel()
    assert [(p, b["key"]) for p, b in zip(peer.paths, peer.received, strict=True)] == [
        ("/ops", "a:1"), ("/ops", "b:1"), ("/ops", "b:2"), ("/boss", "a:1:escalation:0")]
    assert peer.duplicates() == 0


@pytest.mark.anyio
async def test_a_full_outbox_stops_reading_and_the_log_keeps_the_rest(tmp_path):
    peer = WebhookReceiver()
    peer.down = True
    async with alarm_log(tmp_path) as (lg, codec), anyio.create_task_group() as tg:
        url = await tg.start(peer.serve, WebhookReceiverConfig(port=0))
        cfg = router_config(id="alerts", **{**FAST, "breaker_cooldown_s": 0.2}, batch_size=5,
                            max_pending=10, destinations=[hook("ops", url)],
                            routes=[{"destinations": ["ops"]}])
        router = AlertRouterActor("sink.alerts", cfg, lg, codec)
        drivers = [AlarmDriver(f"a{i}") for i in range(30)]
        await append(lg, codec, [d.raise_() for d in drivers])
        await tg.start(router.run)

        async def blocked() -> bool:
            return peer.attempts >= 4 and router.metrics()["pending_notices"] == 10.0

        await wait_until(blocked)
        assert router._read_upto == {(TOPIC, 0): 10}  # two batches read, then no more
        assert await uncommitted(lg, cfg.consumer_group) == 30
        peer.down = False

        async def drained() -> bool:
            return len(peer.received) == 30 and await uncommitted(lg, cfg.consumer_group) == 0

        await wait_until(drained)
        tg.cancel_scope.cancel()
    assert peer.duplicates() == 0


@pytest.mark.anyio
async def test_a_refused_login_keeps_the_alarm_and_opens_the_mail_breaker(tmp_path):
    cert, server_tls = self_signed(tmp_path)
    mails = SmtpReceiver()
    async with alarm_log(tmp_path) as (lg, codec):
        async with anyio.create_task_group() as tg:
            smtp = await tg.start(lambda task_status: mails.serve(
                SmtpReceiverConfig(port=0), tls_context=server_tls,
                authenticator=authenticator, task_status=task_status))
            email = {"type": "email", "id": "oncall", "host": "127.0.0.1",
                     "port": int(smtp.rpartition(":")[2]), "ca_file": str(cert),
                     "username": SMTP_USER, "password": "wrong", "sender": "gw@plant.example",
                     "recipients": ["oncall@plant.example"], "timeout_s": 5}
            cfg = router_config(id="alerts", **FAST, destinations=[email],
                                routes=[{"destinations": ["oncall"]}])
            router = AlertRouterActor("sink.alerts", cfg, lg, codec)
            await append(lg, codec, [AlarmDriver("a1").raise_()])
            await tg.start(router.run)

            async def opened() -> bool:
                return router.dest_breakers["oncall"].breaker_state is BreakerState.OPEN

            await wait_until(opened)
            tg.cancel_scope.cancel()
        assert await uncommitted(lg, cfg.consumer_group) == 1
        assert await read_all(lg, codec, "dlq.events") == []
    assert mails.messages == []
    assert "SMTPAuthenticationError" in (router.dest_breakers["oncall"].core.last_error or "")
    assert "wrong" not in router.dest_breakers["oncall"].core.last_error


@pytest.mark.anyio
async def test_connection_refused_is_retried_until_the_webhook_listens(tmp_path):
    port = free_port()
    peer = WebhookReceiver()
    async with alarm_log(tmp_path) as (lg, codec), anyio.create_task_group() as tg:
        cfg = router_config(id="alerts", **FAST,
                            destinations=[hook("ops", f"http://127.0.0.1:{port}/ops")],
                            routes=[{"destinations": ["ops"]}])
        router = AlertRouterActor("sink.alerts", cfg, lg, codec)
        d = AlarmDriver("a1")
        await append(lg, codec, [d.raise_(), d.ack()])
        await tg.start(router.run)

        async def opened() -> bool:
            return router.dest_breakers["ops"].breaker_state is BreakerState.OPEN

        await wait_until(opened)
        assert "ClientConnectorError" in router.last_error and "/ops" not in router.last_error
        await tg.start(peer.serve, WebhookReceiverConfig(port=port))

        async def delivered() -> bool:
            return len(peer.received) == 2 and await uncommitted(lg, cfg.consumer_group) == 0

        await wait_until(delivered)
        tg.cancel_scope.cancel()
    assert [b["key"] for b in peer.received] == ["a1:1", "a1:2"]


@pytest.mark.anyio
async def test_a_lost_reply_is_the_one_resend_and_it_carries_the_same_key(tmp_path):
    peer = WebhookReceiver()
    peer.reply_delay_s = 1.0  # longer than the router's timeout: the reply is lost
    async with alarm_log(tmp_path) as (lg, codec), anyio.create_task_group() as tg:
        url = await tg.start(peer.serve, WebhookReceiverConfig(port=0))
        cfg = router_config(id="alerts", **FAST,
                            destinations=[hook("ops", url, timeout_s=0.3)],
                            routes=[{"destinations": ["ops"]}])
        router = AlertRouterActor("sink.alerts", cfg, lg, codec)
        await append(lg, codec, [AlarmDriver("a1").raise_()])
        await tg.start(router.run)

        async def resent() -> bool:
            return peer.keys["a1:1"] >= 2

        await wait_until(resent)
        assert await uncommitted(lg, cfg.consumer_group) == 1  # not confirmed yet
        peer.reply_delay_s = 0.0

        async def confirmed() -> bool:
            return await uncommitted(lg, cfg.consumer_group) == 0

        await wait_until(confirmed)
        tg.cancel_scope.cancel()
    assert set(peer.keys) == {"a1:1"}  # every copy says which transition it is
    assert "TimeoutError" in (router.dest_breakers["ops"].core.last_error or "")
