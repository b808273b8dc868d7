"""Inside a bulkhead process: its anyio loop, its supervisor, its heartbeats.

Runs in a process forked from the forkserver (see ``bulkhead.py``). The
process dies with its parent (PR_SET_PDEATHSIG), leads its own process group
(the gateway kills the group when it sees the bulkhead die, so no program the
bulkhead started outlives it: ``process_group.py``), ignores SIGINT (Ctrl-C in a
terminal reaches the whole process group; the gateway decides the stop
order) and treats SIGTERM like a Stop command.
"""

from __future__ import annotations

import gc
import logging
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path

import anyio
import msgspec

from otgate.actors.actor import describe
from otgate.actors.context import BuildContext
from otgate.actors.log.config import Backend
from otgate.actors.messages import (
    CommandsPending,
    Heartbeat,
    InjectFault,
    Reconfigure,
    Started,
    Stop,
    Stopped,
)
from otgate.config.schema import LOG_ID, GatewayConfig
from otgate.supervisors.channel import Channel, ChannelClosed
from otgate.supervisors.logs import setup_logging
from otgate.supervisors.plan import digest, parts, plan_bulkheads
from otgate.supervisors.process_group import lead_own_group, set_death_signal
from otgate.supervisors.spec import ChildSpec
from otgate.supervisors.supervisor import Supervisor
from otgate.supervisors.titles import set_title

log = logging.getLogger("otgate.bulkhead")
EXIT_FAILED = 3  # the in-process tree went over its restart intensity
SWITCH_INTERVAL_S = 0.001
"""How long a thread holds the GIL while another waits for it (see ``bulkhead_main``)."""


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL us when our parent dies, so nothing is orphaned."""
    parent = os.getppid()
    set_death_signal()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def bulkhead_main(
    bulkhead_id: str, config_json: bytes, sock: socket.socket, secrets: list[str]
) -> None:
    """Process entry point (called by multiprocessing in the child)."""
    die_with_parent()
    lead_own_group()
    set_title(f"bulkhead {bulkhead_id}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(secrets=secrets)  # JSON lines on the gateway's stdout, secrets redacted
    # The data path allocates millions of short-lived objects that form no cycles:
    # collect young objects rarely, and never rescan what the fork server preloaded.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    # The log's SQLite calls run in worker threads; each one back from C waits for the
    # GIL, and while the event loop's thread runs a stage's batch it gets it only after
    # the switch interval (5 ms by default): a transaction of a few calls waited tens of
    # ms (the validator's appends: 35-100 ms per batch beside the aggregator).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    cfg = msgspec.json.decode(config_json, type=GatewayConfig)
    plan = next(p for p in plan_bulkheads(cfg) if p.id == bulkhead_id)
    if plan.address_space_limit_mib:
        limit = plan.address_space_limit_mib * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    Path(cfg.gateway.state_dir).mkdir(parents=True, exist_ok=True)
    try:
        code = anyio.run(_run, bulkhead_id, cfg, sock)
    except BaseException:  # the last word before the process goes; the parent restarts us
        log.exception("bulkhead_crashed bulkhead=%s", bulkhead_id)
        code = 1
    sys.stdout.flush()
    os._exit(code)


def _specs(bulkhead_id: str, cfg: GatewayConfig, ctx: BuildContext) -> list[ChildSpec]:
    plan = next(p for p in plan_bulkheads(cfg) if p.id == bulkhead_id)
    all_parts = parts(cfg)
    specs = [
        ChildSpec(
            id=m,
            start=lambda part=all_parts[m]: part.build(ctx),
            shutdown=cfg.gateway.shutdown_timeout / 2,
            config_digest=digest(all_parts[m]),
        )
        for m in plan.members
    ]
    if cfg.log.backend is Backend.EMBEDDED and LOG_ID not in plan.members:
        # Every writer watches the disk tiers: at 95 % full its appends block.
        specs.insert(0, ChildSpec(id="disk-guard", start=lambda: _guard(cfg, ctx)))
    return specs


def _guard(cfg: GatewayConfig, ctx: BuildContext):
    from otgate.actors.log.actor import LogMaintenance

    return LogMaintenance("disk-guard", ctx.log, cfg.log, ctx.state_dir, role="guard")


async def _open_context(cfg: GatewayConfig) -> tuple[BuildContext, object]:
    from otgate.actors.log.open import open_log, open_publisher, schema_store

    state_dir = Path(cfg.gateway.state_dir)
    backend = await open_log(cfg.log, state_dir)
    try:
        publisher = await open_publisher(cfg.log, state_dir, backend)
    except BaseException:
        await backend.close()
        raise
    ctx = BuildContext(
        gateway_id=cfg.gateway.id,
        publish=publisher.publish,
        state_dir=state_dir,
        log=backend,
        extras={"schemas": schema_store(cfg.log, state_dir, backend)},
    )
    return ctx, backend


async def _run(bulkhead_id: str, cfg: GatewayConfig, sock: socket.socket) -> int:
    channel = await Channel.from_socket(sock)
    try:
        ctx, backend = await _open_context(cfg)
    except Exception as exc:
        await channel.send(Stopped(error=f"cannot open the log: {describe(exc)}"))
        return EXIT_FAILED
    sup = Supervisor(bulkhead_id, _specs(bulkhead_id, cfg, ctx), cfg.supervision.bulkhead)
    error: str | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_heartbeats, channel, sup, cfg.supervision.heartbeat_interval)
            await tg.start(sup.run)
            # A fresh tree before Started, so the gateway never shows the start's states.
            await channel.send(Heartbeat(pid=os.getpid(), seq=0, tree=sup.snapshot()))
            await channel.send(Started(pid=os.getpid()))
            tg.start_soon(_on_sigterm, tg.cancel_scope)
            await _serve_control(channel, sup, bulkhead_id, ctx)
            tg.cancel_scope.cancel()
    except Exception as exc:
        error = describe(exc)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await backend.close()
    try:
        with anyio.move_on_after(1):
            await channel.send(Stopped(error=error))
    except ChannelClosed:
        pass
    return EXIT_FAILED if error else 0


async def _heartbeats(channel: Channel, sup: Supervisor, interval: float) -> None:
    seq = 0
    while True:
        seq += 1
        await channel.send(Heartbeat(pid=os.getpid(), seq=seq, tree=sup.snapshot()))
        await anyio.sleep(interval)


async def _on_sigterm(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def _serve_control(
    channel: Channel, sup: Supervisor, bulkhead_id: str, ctx: BuildContext
) -> None:
    """Handle the gateway's commands until Stop or until the gateway is gone."""
    leak: list[bytes] = []
    while True:
        try:
            msg = await channel.receive()
        except ChannelClosed:
            return
        if isinstance(msg, Stop):
            return
        if isinstance(msg, Reconfigure):
            cfg = msgspec.json.decode(msg.config, type=GatewayConfig)
            await sup.apply(_specs(bulkhead_id, cfg, ctx))
        elif isinstance(msg, InjectFault):
            await _inject(msg, sup, leak)
        elif isinstance(msg, CommandsPending):
            # straight to the session's write runner, not through its mailbox (one
            # task switch less per write); a member gone after a reload has none
            actor = sup.child(msg.adapter_id) if msg.adapter_id in sup.child_ids() else None
            runner = getattr(actor, "commands", None)
            if runner is not None:
                runner.wake()


async def _inject(fault: InjectFault, sup: Supervisor, leak: list[bytes]) -> None:
    log.warning("fault_injected kind=%s target=%s", fault.kind, fault.target)
    if fault.kind == "hang":
        time.sleep(3600)  # noqa: ASYNC251 -- blocks the event loop, like a stuck C call would
    elif fault.kind == "exit":
        os._exit(70)
    elif fault.kind == "leak":
        while True:  # touch every page so resident memory really grows
            leak.append(b"\x01" * (16 * 1024 * 1024))
            await anyio.sleep(0.01)
    elif fault.kind == "crash" and fault.target:
        actor = sup.child(fault.target)
        if actor is not None:
            actor.send_nowait(fault)
