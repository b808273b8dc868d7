"""The alarm part of a scenario run: the gateway's config for it, its peers,
its faults, and waiting for it to settle before the check."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from otgate.actors.log.cmd import read_rows
from otgate.actors.log.config import LogConfig
from otgate.simulations.harness.alarm_check import AlarmReport, check_alarms, settled
from otgate.simulations.harness.alarm_peers import (
    DEFINITION,
    LIMIT,
    PARAMETER,
    Acker,
    AlarmDevice,
    HarnessWebhook,
    alarm_id,
)
from otgate.simulations.harness.devices import mqtt_adapter_toml
from otgate.simulations.harness.scenario import Alarms, Fault, FaultKind
from otgate.simulations.report import Report

ROUTER = "alerts"
"""The alert router's sink id (and bulkhead)."""
JOURNAL = "alarms.clean"
CHECKPOINT_S = 2.0
"""Slack for the router's checkpoint after a flush (an fsync on a loaded machine)."""
KILL_GRACE_S = 0.5
"""How long a bulkhead may outlive its killed root (its parent-death signal)."""


def alarms_toml(cfg: Alarms, broker_port: int, hook_url: str) -> str:
    """The alarm devices' MQTT adapter, the ``high`` alarm on their ``temp``, and
    the alert router to the webhook: every transition notifies (``dedupe_window
    = "0s"``), retries and the breaker recover within a second or two."""
    fields = f'{{ path = "seq", parameter = "seq" }}, {{ path = "temp", parameter = "{PARAMETER}" }}'
    return f"""
[processing.alarms]
tick_s = 0.1
checkpoint_interval_s = 2.0
definitions = [
  {{ kind = "high", name = "{DEFINITION}", parameter = "{PARAMETER}", limit = {LIMIT}, severity = "HIGH" }},
]
[[sinks]]
type = "alert_router"
id = "{ROUTER}"
fetch_timeout_s = 0.1
dedupe_window = "0s"
retry_initial_s = 0.2
retry_max_s = 1.0
breaker_cooldown_s = 1.0
routes = [{{ severity = "HIGH", destinations = ["control-room"] }}]
[[sinks.destinations]]
type = "webhook"
id = "control-room"
url = "{hook_url}/control-room"
timeout_s = {cfg.webhook_timeout_s}
""" + mqtt_adapter_toml("alarm-devices", "harness-alarms", broker_port, "alarm", fields)


@dataclass
class AlarmParts:
    """The alarm peers of one run and what the faults did to the router."""

    cfg: Alarms
    devices: list[AlarmDevice]
    hook: HarnessWebhook = field(default_factory=HarnessWebhook)
    acker: Acker | None = None
    router_kills: list[float] = field(default_factory=list)  # monotonic

    @classmethod
    def of(cls, cfg: Alarms) -> AlarmParts:
        period = cfg.low_s + cfg.high_s
        devices = [AlarmDevice(f"alarm-{i}", cfg, offset_s=i * period / (cfg.devices + 1))
                   for i in range(cfg.devices)]
        return cls(cfg, devices)

    def start_acker(self, url, token: str) -> Acker:
        ids = {alarm_id(d.id) for d in self.devices}
        self.acker = Acker(url, token, ids, self.cfg.ack_after_s)
        return self.acker

    async def fault(self, fault: Fault) -> None:
        """``webhook_down``, ``webhook_fail``, ``webhook_slow`` for ``duration_s``."""
        k = fault.kind
        if k is FaultKind.WEBHOOK_DOWN:
            self.hook.stop_for(fault.duration_s)
        elif k is FaultKind.WEBHOOK_FAIL:
            self.hook.down = True
        elif k is FaultKind.WEBHOOK_SLOW:
            self.hook.reply_delay_s = self.cfg.webhook_timeout_s + 0.5
        await anyio.sleep(fault.duration_s)
        self.hook.down = False
        self.hook.reply_delay_s = 0.0

    def killed(self, fault: Fault) -> None:
        """Note a kill of the router's process (the gateway, or its bulkhead), once the
        signal is sent: a send accepted before this may be resent (plus a grace for
        a bulkhead outliving a killed root until its parent-death signal)."""
        if fault.kind is FaultKind.GATEWAY_KILL or fault.target == ROUTER:
            self.router_kills.append(time.monotonic() + KILL_GRACE_S)

    def save(self, path: Path) -> None:
        """What the peers saw, for a post-mortem of a failed run (in the workdir)."""
        assert self.acker is not None
        t0 = min([d.at for d in self.hook.deliveries] + self.router_kills, default=0.0)
        doc = {
            "deliveries": [[d.key, round(d.at - t0, 3), d.replied] for d in self.hook.deliveries],
            "router_kills": [round(k - t0, 3) for k in self.router_kills],
            "acks": {o: [a.status, a.attempts, a.refused] for o, a in self.acker.answers.items()},
            "seen": sorted(self.acker.seen),
            "acker_errors": self.acker.errors,  # calls that got no answer (gateway away, 5xx, 202)
        }
        path.write_text(json.dumps(doc, indent=1))

    async def journal(self, log_cfg: LogConfig, state_dir: Path) -> list[dict]:
        try:
            return await read_rows(log_cfg, state_dir, JOURNAL, 0, 10**9)
        except SystemExit:  # no journal yet
            return []

    async def drain(self, log_cfg: LogConfig, state_dir: Path, timeout_s: float,
                    report: Report) -> AlarmReport:
        """Wait (bounded) for every transition, ack and delivery; then check."""
        assert self.acker is not None
        deadline = time.monotonic() + timeout_s
        while True:
            rows = await self.journal(log_cfg, state_dir)
            if settled(self.devices, rows, self.acker, self.hook.deliveries):
                break
            if time.monotonic() > deadline:
                report.progress("alarms did not settle: checking what arrived")
                break
            report.progress(f"waiting for alarms: {len(self.acker.pending())} acks pending, "
                            f"{len(self.hook.deliveries)} webhook deliveries")
            await anyio.sleep(1.0)
        rows = await self.journal(log_cfg, state_dir)
        self.save(state_dir.parent / "alarms-peers.json")
        rep = check_alarms(self.devices, rows, self.acker, self.hook.deliveries,
                           self.router_kills, window_s=self.cfg.webhook_timeout_s + CHECKPOINT_S)
        rep.counts["webhook_requests"] = self.hook.attempts  # failed and slow ones too
        rep.counts["ack_retries"] = sum(a.attempts - 1 for a in self.acker.answers.values())
        return rep
