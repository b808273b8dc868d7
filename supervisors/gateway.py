"""The gateway root: bulkheads under one supervisor, the status endpoint,
systemd notification, SIGHUP reload and SIGTERM shutdown."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import anyio
import msgspec

from otgate.actors.messages import InjectFault, Snapshot, State
from otgate.config.load import ConfigError, Loaded, load_config
from otgate.config.schema import GatewayConfig
from otgate.config.secrets import Redactor
from otgate.supervisors import notify
from otgate.supervisors.bulkhead import Bulkhead
from otgate.supervisors.health import health_document
from otgate.supervisors.plan import plan_bulkheads
from otgate.supervisors.spec import ChildSpec
from otgate.supervisors.status_server import StatusServer
from otgate.supervisors.supervisor import Supervisor

log = logging.getLogger("otgate.gateway")
LAST_GOOD = "last-good-config.toml"
STOP_BUDGET_S = 30.0  # whole-tree stop; systemd's TimeoutStopSec is 45 s


def bulkhead_specs(cfg: GatewayConfig) -> list[ChildSpec]:
    config_json = msgspec.json.encode(cfg)
    sup = cfg.supervision
    return [
        ChildSpec(
            id=plan.id,
            start=lambda plan=plan: Bulkhead(
                plan,
                config_json,
                heartbeat_timeout=sup.heartbeat_timeout,
                start_timeout=sup.start_timeout,
                shutdown_timeout=cfg.gateway.shutdown_timeout,
            ),
            shutdown=cfg.gateway.shutdown_timeout,
            start_timeout=sup.start_timeout + 5.0,
            config_digest=plan.digest,
        )
        for plan in plan_bulkheads(cfg)
    ]


class Gateway:
    def __init__(
        self,
        loaded: Loaded,
        config_path: Path,
        *,
        status_listen: str | None = None,
        redactor_update=None,
    ) -> None:
        self.loaded = loaded
        self.config_path = config_path
        self.status_listen = status_listen or loaded.config.status.listen
        self.started_at = time.monotonic()
        self.root = Supervisor(
            "gateway", bulkhead_specs(self.config), self.config.supervision.gateway
        )
        self.status = StatusServer(self, self.status_listen)
        self._redactor = Redactor(loaded.secrets)
        self._redactor_update = redactor_update
        self._stop = anyio.Event()

    @property
    def config(self) -> GatewayConfig:
        return self.loaded.config

    # -- views for the status endpoint ---------------------------------------------
    def snapshot(self) -> Snapshot:
        return self.root.snapshot()

    def ready(self) -> bool:
        return self.root.ready()

    def alive(self) -> bool:
        return self.root.state in (State.RUNNING, State.STARTING)

    def health(self) -> dict:
        doc = health_document(
            self.snapshot(), self.config.gateway.id, time.monotonic() - self.started_at
        )
        return self._redactor.tree(doc)

    async def restart(self, bulkhead_id: str) -> str:
        if bulkhead_id not in self.root.child_ids():
            raise KeyError(bulkhead_id)
        return await self.root.restart_child(bulkhead_id)

    async def inject(self, bulkhead_id: str, fault: InjectFault) -> None:
        bulkhead = self.root.child(bulkhead_id) if bulkhead_id in self.root.child_ids() else None
        if bulkhead is None:
            raise KeyError(bulkhead_id)
        await bulkhead.inject(fault)

    def request_stop(self) -> None:
        self._stop.set()

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or ``request_stop``); return the exit code."""
        await self.status.start()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._signals)
                tree_scope = anyio.CancelScope()
                tree_done = anyio.Event()
                tg.start_soon(self._run_tree, tree_scope, tree_done)
                await self._stop.wait()
                notify.stopping()
                log.info("gateway_stopping reason=signal")
                tg.start_soon(self._kill_after, STOP_BUDGET_S)
                tree_scope.cancel()
                await tree_done.wait()
                tg.cancel_scope.cancel()
        finally:
            await self.status.close()
        log.info("gateway_stopped")
        return 0

    async def _run_tree(self, scope: anyio.CancelScope, done: anyio.Event) -> None:
        """The supervision tree; cancelling ``scope`` stops it leaves-first."""
        with scope:
            try:
                await self._serve_tree()
            finally:
                done.set()

    async def _serve_tree(self) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self.root.run)
            self._save_last_good()
            notify.ready()
            log.info(
                "gateway_ready gateway=%s bulkheads=%d status=%s",
                self.config.gateway.id,
                len(self.root.child_ids()),
                self.status.url,
            )
            tg.start_soon(notify.watchdog_loop, self.alive)

    async def _kill_after(self, budget: float) -> None:
        """The stop is bounded: after ``budget`` s every bulkhead still there is killed."""
        await anyio.sleep(budget)
        for node in self.snapshot().children:
            if node.pid:
                log.error("stop_budget_exceeded bulkhead=%s pid=%s", node.id, node.pid)
                try:
                    os.kill(node.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                else:
                    self.request_stop()

    async def reload(self) -> str:
        """Re-read the config file; restart only the bulkheads whose parts changed."""
        notify.reloading()
        try:
            loaded = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload_refused problems=%s", "; ".join(exc.problems))
            notify.ready()
            return f"refused: {exc}"
        self.loaded = loaded
        self._redactor = Redactor(loaded.secrets)
        if self._redactor_update is not None:
            self._redactor_update(loaded.secrets)
        result = await self.root.apply(bulkhead_specs(loaded.config))
        self._save_last_good()
        log.warning("config_reloaded %s", result)
        notify.ready()
        return result

    def _save_last_good(self) -> None:
        """Keep the file that started cleanly (unresolved: secret refs, not values)."""
        path = Path(self.config.gateway.state_dir) / LAST_GOOD
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(self.loaded.raw)
            os.replace(tmp, path)
        except OSError as exc:
            log.error("last_good_config_not_saved path=%s error=%s", path, exc)
