"""``otgate bench alerts``: notifications/s of the alert router next to the bare
client loop against the same receiver (same run).

Workload: N CRITICAL raises of distinct alarms (dedupe off) already in an
embedded log (temp dir); one route to one destination. Rows per destination:

* ceiling: a bare loop sending the same bodies one after another (aiohttp
  POST with one session; ``aiosmtplib.send`` per mail) to the same receiver;
* router: ``AlertRouterActor`` from start until the receiver holds all N and
  the group committed them (decode, routing, outbox, checkpoint, commit).

Receivers (aiohttp, aiosmtpd) run in this process and event loop, so the
numbers include their CPU; CPU is ``time.process_time()`` of this process.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import anyio
import msgspec

from otgate.actors.log.base import TopicSpec
from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.records import Alarm, AlarmSeverity, AlarmState
from otgate.actors.stage_codec import LogCodec
from otgate.simulations.alert_receivers import (
    SmtpReceiver,
    SmtpReceiverConfig,
    WebhookReceiver,
    WebhookReceiverConfig,
)
from otgate.simulations.report import Report
from otgate.sinks.alert_router import AlertRouter
from otgate.sinks.alert_router.actor import AlertRouterActor
from otgate.sinks.alert_router.messages import email, json_body
from otgate.sinks.alert_router.routing import Notice

TITLE = "alerts: notifications/s, alert router vs bare client loop (same run, same receiver)"
TOPIC = "alarms.clean"


def alarms(n: int) -> list[Alarm]:
    t = time.time_ns()
    return [Alarm(alarm_id=f"bench-{i}", occurrence_id=f"bench-{i}-1", seq=1,
                  asset_id=f"pump-{i % 50}", parameter="pressure",
                  state=AlarmState.ACTIVE_UNACKED, event="raise", active=True, acked=False,
                  severity=AlarmSeverity.CRITICAL, message="discharge pressure high",
                  gateway_time=t + i) for i in range(n)]


def router_config(dest: dict[str, Any]) -> AlertRouter:
    return msgspec.convert({
        "type": "alert_router", "id": "bench", "dedupe_window": "0s", "fetch_timeout_s": 0.05,
        "destinations": [dest], "routes": [{"destinations": [dest["id"]]}],
    }, AlertRouter)


async def ceiling_webhook(url: str, notices: list[Notice]) -> None:
    async with aiohttp.ClientSession() as session:
        for n in notices:
            async with session.post(url, data=json_body(n, "bench"),
                                    headers={"Content-Type": "application/json",
                                             "Idempotency-Key": n.key}) as resp:
                await resp.read()


async def ceiling_smtp(port: int, cfg: AlertRouter, notices: list[Notice]) -> None:
    dest = cfg.destinations[0]
    for n in notices:
        await aiosmtplib.send(email(n, dest, "bench"), hostname="127.0.0.1", port=port,
                              start_tls=False)


async def through_router(tmp: Path, cfg: AlertRouter, records: list[Alarm],
                         received: Any) -> None:
    lg = EmbeddedLog(tmp / "log.sqlite")
    await lg.start()
    try:
        await lg.ensure_topics([TopicSpec(name=TOPIC), TopicSpec(name="dlq.events")])
        codec = LogCodec(EmbeddedSchemaStore(lg))
        await codec.prepare([TOPIC, "dlq.events"])
        for i in range(0, len(records), 500):
            await lg.append(TOPIC, [(a.asset_id.encode(), codec.encode(TOPIC, a))
                                    for a in records[i:i + 500]])
        router = AlertRouterActor("sink.bench", cfg, lg, codec, checkpoint=tmp / "ck.json")
        async with anyio.create_task_group() as tg:
            await tg.start(router.run)
            while received() < len(records) or router.metrics()["pending_notices"]:
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    finally:
        await lg.close()


async def timed(fn: Any, *args: Any) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    await fn(*args)
    return time.perf_counter() - w0, time.process_time() - c0


async def run(report: Report, args: argparse.Namespace) -> None:
    n = 300 if args.quick else 2000
    records = alarms(n)
    notices = [Notice(key=f"{a.alarm_id}:{a.seq}", destination="d", kind="transition",
                      alarms=[a]) for a in records]
    hook, mail = WebhookReceiver(), SmtpReceiver()
    logging.getLogger("otgate.simulations.alerts").setLevel(logging.ERROR)  # one line per message
    async with anyio.create_task_group() as tg:
        url = await tg.start(hook.serve, WebhookReceiverConfig(port=0))
        smtp = await tg.start(lambda task_status: mail.serve(SmtpReceiverConfig(port=0),
                                                             task_status=task_status))
        port = int(smtp.rpartition(":")[2])
        web_cfg = router_config({"type": "webhook", "id": "hook", "url": url + "/hook"})
        mail_cfg = router_config({"type": "email", "id": "mail", "host": "127.0.0.1",
                                  "port": port, "tls": "none", "sender": "gw@plant",
                                  "recipients": ["ops@plant"]})
        rows = [
            ("webhook", "ceiling: aiohttp POST loop", ceiling_webhook, (url + "/c", notices),
             hook),
            ("webhook", "alert router", None, (web_cfg,), hook),
            ("smtp", "ceiling: aiosmtplib.send loop", ceiling_smtp, (port, mail_cfg, notices),
             mail),
            ("smtp", "alert router", None, (mail_cfg,), mail),
        ]
        ceiling = 0.0
        for dest, measure, fn, fargs, peer in rows:
            report.progress(f"{dest}: {measure}, {n} notifications")
            hook.keys.clear()  # duplicates are counted per row
            before = len(peer.received if dest == "webhook" else peer.messages)

            def got(peer: Any = peer, before: int = before, dest: str = dest) -> int:
                return len(peer.received if dest == "webhook" else peer.messages) - before

            with tempfile.TemporaryDirectory() as tmp:
                if fn is None:
                    wall, cpu = await timed(through_router, Path(tmp), fargs[0], records, got)
                else:
                    wall, cpu = await timed(fn, *fargs)
            rate = n / wall
            ceiling = rate if fn is not None else ceiling
            report.add(destination=dest, measure=measure, notifications=got(),
                       per_s=rate, cpu_us_per_notification=cpu / n * 1e6,
                       ratio=rate / ceiling if ceiling else 0.0,
                       duplicates=hook.duplicates() if dest == "webhook" else "")
        tg.cancel_scope.cancel()
