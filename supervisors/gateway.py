"""The gateway root: bulkheads under one supervisor, the status endpoint,
systemd notification, config reload (SIGHUP or a control-plane pull) and
SIGTERM shutdown."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import msgspec

from otgate.actors.messages import CommandsPending, InjectFault, Snapshot, State
from otgate.config.control_plane.agent import ControlPlaneAgent
from otgate.config.control_plane.contract import ApplyStatus, Outcome
from otgate.config.control_plane.document import CACHE
from otgate.config.load import ConfigError, ConfigSource, Loaded, load_config
from otgate.config.schema import GatewayConfig
from otgate.config.secrets import Redactor
from otgate.supervisors import notify
from otgate.supervisors.bulkhead import Bulkhead
from otgate.supervisors.channel import ChannelClosed
from otgate.supervisors.health import health_document
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.ops_write import WriteService
from otgate.supervisors.plan import plan_bulkheads
from otgate.supervisors.service.ops import Operations
from otgate.supervisors.spec import ChildSpec, OnExhausted
from otgate.supervisors.status_server import StatusServer
from otgate.supervisors.supervisor import Supervisor, SupervisorStopped

log = logging.getLogger("otgate.gateway")
LAST_GOOD = "last-good-config.toml"
_UP = (State.RUNNING, State.DEGRADED)
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
        self.ops = Operations(self.oplog, lambda: self.config, self.restart)
        self.writes = WriteService(self)
        self._redactor = Redactor(loaded.secrets)
        self._redactor_update = redactor_update
        self._stop = anyio.Event()
        self._reload_lock = anyio.Lock()
        self.stopping = False
        cp = self.config.control_plane
        self.control_plane = ControlPlaneAgent(self, cp) if cp else None

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
        doc["config_version"] = self.config.config_version
        doc["config_source"] = self.loaded.source.value
        if self.control_plane is not None:
            doc["control_plane"] = self.control_plane.statistics()
        return self._redactor.tree(doc)

    def redact(self, text: str) -> str:
        """``text`` with the config's secrets masked (for anything shown to operators)."""
        return self._redactor.text(text)

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
                tg.start_soon(self.ops.follow)
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
            if self.control_plane is not None:
                tg.start_soon(self.control_plane.run)

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
                    if signum == signal.SIGHUP and self.control_plane is not None:
                        self.control_plane.poll_now()  # the control plane owns the config
                    elif signum == signal.SIGHUP:
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

    async def reload(self) -> Outcome:
        """Re-read the config file and apply it (see ``apply_config``)."""
        return await self.apply_config(lambda: load_config(self.config_path))

    async def apply_config(
        self, load: Callable[[], Loaded], *, grace: float | None = None, watch: bool = False
    ) -> Outcome:
        """The one reload path (SIGHUP and control-plane pulls): ``load`` runs
        under the reload lock (a ``ConfigError`` refuses the config and nothing
        changes); then only the bulkheads whose parts changed (and any FAILED
        one) restart. If the new tree is not ready within ``grace`` (default
        ``reload_grace_s``), the previous config is applied again.

        With ``watch`` (a pulled config: nobody is at the console) the bulkheads
        it added or changed are watched until the grace period ends: one that
        restarts or stops being up before then rolls the config back too.
        """
        async with self._reload_lock:
            notify.reloading()
            try:
                loaded = load()
            except ConfigError as exc:
                log.error("reload_refused problems=%s", "; ".join(exc.problems))
                notify.ready()
                return Outcome(ApplyStatus.REJECTED, f"refused: {exc}", exc.problems)
            previous = self.loaded
            if loaded.config.status.listen != previous.config.status.listen:
                log.warning(
                    "reload_status_listen_ignored listen=%s (takes effect at the next start)",
                    loaded.config.status.listen,
                )
            self._use(loaded)
            specs = self._specs(loaded)
            before = {s.id: s.config_digest for s in self._specs(previous)}
            started = frozenset(s.id for s in specs if before.get(s.id) != s.config_digest)
            result = await self.root.apply(specs)
            log.warning(
                "config_reloaded %s source=%s version=%d",
                result, loaded.source.value, loaded.config.config_version,
            )
            notify.ready()
            errors = await self._confirm(loaded, previous, grace, started if watch else frozenset())
            if errors is not None:
                return Outcome(ApplyStatus.ROLLED_BACK, f"rolled back: {result}", errors)
            return Outcome(ApplyStatus.APPLIED, result)

    def _use(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self._redactor = Redactor(loaded.secrets)
        if self._redactor_update is not None:
            self._redactor_update(loaded.secrets)

    async def _confirm(
        self,
        loaded: Loaded,
        previous: Loaded | None,
        grace: float | None = None,
        watch: frozenset[str] = frozenset(),
    ) -> list[str] | None:
        """Cache ``loaded`` as last good once the tree is ready (and the bulkheads
        in ``watch`` stayed up until the grace period ends); otherwise roll back
        to ``previous`` (when there is one). Returns None when confirmed, else
        the errors of the bulkheads that were not up."""
        grace = grace or self.config.supervision.reload_grace_s
        deadline = anyio.current_time() + grace
        ready = False
        with anyio.move_on_after(grace):
            while not self.root.ready():
                await anyio.sleep(0.2)
            ready = True
        errors = None if ready else self._down()
        if errors is None and watch:
            errors = await self._watch(watch, deadline)
        if errors is None:
            self._save_last_good(loaded)
            return None
        if previous is None:
            log.error("config_not_confirmed ready_within_s=%g (not cached as last good)", grace)
            return errors
        log.error("reload_rolled_back grace_s=%g errors=%s", grace, "; ".join(errors))
        self._use(previous)
        await self.root.apply(self._specs(previous))
        return errors

    async def _watch(self, ids: frozenset[str], deadline: float) -> list[str] | None:
        """None if the bulkheads ``ids`` stay up without a restart until ``deadline``."""
        restarts = {c.id: c.restarts for c in self.snapshot().children if c.id in ids}
        while anyio.current_time() < deadline:
            errors = self._down(restarts)
            if errors:
                return errors
            await anyio.sleep(0.2)
        return None

    def _down(self, watched: dict[str, int] | None = None) -> list[str]:
        """``bulkhead: state last_error`` of each bulkhead not up; with ``watched``
        (id -> restarts before), only of those, and also when they restarted."""

        def down(c: Snapshot) -> bool:
            if watched is None:
                return c.state not in _UP
            return c.id in watched and (c.state not in _UP or c.restarts > watched[c.id])

        return [
            self._redactor.text(f"{c.id}: {c.state.value} {c.last_error or ''}".rstrip())
            for c in self.snapshot().children
            if down(c)
        ]

    def _save_last_good(self, loaded: Loaded) -> None:
        """Keep the config that ran (unresolved: secret refs, not values), owner-only:
        the file as ``LAST_GOOD``, a pulled one as the control-plane ``CACHE``."""
        name = LAST_GOOD if loaded.source is ConfigSource.FILE else CACHE
        path = Path(loaded.config.gateway.state_dir) / name
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
