"""The gateway root: bulkheads under one supervisor, the status endpoint,
systemd notification, SIGHUP reload and SIGTERM shutdown."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

import anyio
import msgspec

from otgate.actors.messages import CommandsPending, InjectFault, Snapshot, State
from otgate.config.load import ConfigError, Loaded, load_config
from otgate.config.schema import GatewayConfig
from otgate.config.secrets import Redactor
from otgate.supervisors import notify
from otgate.supervisors.bulkhead import Bulkhead
from otgate.supervisors.channel import ChannelClosed
from otgate.supervisors.health import health_document
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.ops_write import WriteService
from otgate.supervisors.plan import plan_bulkheads
from otgate.supervisors.spec import ChildSpec, OnExhausted
from otgate.supervisors.status_server import StatusServer
from otgate.supervisors.supervisor import Supervisor, SupervisorStopped

log = logging.getLogger("otgate.gateway")
LAST_GOOD = "last-good-config.toml"
STOP_BUDGET_S = 30.0  # whole-tree stop; systemd's TimeoutStopSec is 45 s


def bulkhead_specs(cfg: GatewayConfig, secrets: frozenset[str] = frozenset()) -> list[ChildSpec]:
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
                secrets=secrets,
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
        # One failed bulkhead never stops the others: the root never escalates.
        flags = msgspec.structs.replace(
            self.config.supervision.gateway, on_exhausted=OnExhausted.FAIL_CHILD
        )
        self.root = Supervisor("gateway", self._specs(loaded), flags)
        self.status = StatusServer(self, self.status_listen)
        self.oplog = OperatorLog(self.config.log, Path(self.config.gateway.state_dir))
        self.writes = WriteService(self)
        self._redactor = Redactor(loaded.secrets)
        self._redactor_update = redactor_update
        self._stop = anyio.Event()
        self._reload_lock = anyio.Lock()
        self.stopping = False

    @property
    def config(self) -> GatewayConfig:
        return self.loaded.config

    @staticmethod
    def _specs(loaded: Loaded) -> list[ChildSpec]:
        return bulkhead_specs(loaded.config, frozenset(loaded.secrets))

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

    async def nudge(self, bulkhead_id: str, message: CommandsPending) -> None:
        """Pass a nudge to an actor in ``bulkhead_id`` (nothing when it is not running)."""
        if bulkhead_id in self.root.child_ids():
            bulkhead = self.root.child(bulkhead_id)
            if bulkhead is not None:
                with contextlib.suppress(ChannelClosed):  # restarting: it looks at start
                    await bulkhead.nudge(message)

    def request_stop(self) -> None:
        self.stopping = True
        self._stop.set()

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or ``request_stop``); return the exit code."""
        await self.status.start()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._signals)
                tg.start_soon(self.writes.run)
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
            await self.oplog.close()
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
            tg.start_soon(self._confirm, self.loaded, None)
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
            if node.pid and node.state is not State.STOPPED:
                log.error("stop_budget_exceeded bulkhead=%s pid=%s", node.id, node.pid)
                try:
                    os.kill(node.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with anyio.create_task_group() as tg:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        # In its own task: SIGTERM is acted on even during a long reload.
                        tg.start_soon(self._reload_quietly)
                    else:
                        self.request_stop()

    async def _reload_quietly(self) -> None:
        try:
            await self.reload()
        except SupervisorStopped:
            pass  # the gateway is stopping
        except Exception:  # a reload must never take the running gateway down
            log.exception("reload_failed")

    async def reload(self) -> str:
        """Re-read the config file; restart only the bulkheads whose parts changed
        (and any FAILED one). If the new tree is not ready within the grace
        period, the previous config is applied again."""
        async with self._reload_lock:
            notify.reloading()
            try:
                loaded = load_config(self.config_path)
            except ConfigError as exc:
                log.error("reload_refused problems=%s", "; ".join(exc.problems))
                notify.ready()
                return f"refused: {exc}"
            previous = self.loaded
            if loaded.config.status.listen != previous.config.status.listen:
                log.warning(
                    "reload_status_listen_ignored listen=%s (takes effect at the next start)",
                    loaded.config.status.listen,
                )
            self._use(loaded)
            result = await self.root.apply(self._specs(loaded))
            log.warning("config_reloaded %s", result)
            notify.ready()
            if not await self._confirm(loaded, previous):
                return f"rolled back: {result}"
            return result

    def _use(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self._redactor = Redactor(loaded.secrets)
        if self._redactor_update is not None:
            self._redactor_update(loaded.secrets)

    async def _confirm(self, loaded: Loaded, previous: Loaded | None) -> bool:
        """Cache ``loaded`` as last-good once the tree is ready; if it is not ready
        within the grace period, roll back to ``previous`` (when there is one)."""
        grace = self.config.supervision.reload_grace_s
        with anyio.move_on_after(grace):
            while not self.root.ready():
                await anyio.sleep(0.2)
            self._save_last_good(loaded)
            return True
        if previous is None:
            log.error("config_not_confirmed ready_within_s=%g (not cached as last good)", grace)
            return False
        log.error("reload_rolled_back not_ready_within_s=%g", grace)
        self._use(previous)
        await self.root.apply(self._specs(previous))
        return False

    def _save_last_good(self, loaded: Loaded) -> None:
        """Keep the file that ran (unresolved: secret refs, not values), owner-only."""
        path = Path(loaded.config.gateway.state_dir) / LAST_GOOD
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(loaded.raw)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            log.error("last_good_config_not_saved path=%s error=%s", path, exc)
