"""OPC UA device simulator: an asyncua Server whose variables follow signal
models, with fault injection (server restart, slow replies, bad status codes).

Variables live under ``ns=2;s=<name>`` (``OpcUaSimulator.node_id``). Every
``update_interval`` each variable gets the next sample of its signal, with a
fresh source timestamp. Faults:

* ``restart_every_s``: stop the server (every session and subscription is
  gone) and start a NEW server on the same port ``restart_down_s`` later;
* ``slow_reply_s`` / ``slow_probability``: delay Read, Browse, Write,
  CreateSubscription and CreateMonitoredItems requests;
* ``bad_status_probability``: serve a sample with a Bad status code (and no
  value) instead of the signal's value.

``run_opcua_simulator(cfg)`` serves until cancelled; ``started()`` gets the
endpoint URL. ``OpcUaSimulator`` is the programmatic handle tests and
benches use (``restart()``, ``faults``...).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.abc import TaskStatus
from asyncua import Server, ua

from otgate.simulations.opcua_sim_config import OpcUaSimConfig, VarType
from otgate.simulations.signals import make_signal

log = logging.getLogger("otgate.simulations.opcua")

_SLOWED = ("read", "write", "browse", "create_subscription", "create_monitored_items")


_VARIANT = {
    VarType.DOUBLE: ua.VariantType.Double,
    VarType.FLOAT: ua.VariantType.Float,
    VarType.INT32: ua.VariantType.Int32,
    VarType.INT64: ua.VariantType.Int64,
    VarType.BOOLEAN: ua.VariantType.Boolean,
    VarType.STRING: ua.VariantType.String,
}


class OpcUaSimulator:
    """The running simulator: one asyncua Server at a time, restartable on its port."""

    def __init__(self, cfg: OpcUaSimConfig) -> None:
        self.cfg = cfg
        self.faults = cfg.faults
        self.variables = cfg.all_variables()
        self.port = cfg.port
        self.server: Server | None = None
        self.nodeids: list[ua.NodeId] = []
        self.rng = random.Random(cfg.seed)
        self.samplers = [make_signal(v.signal, seed=f"{cfg.seed}:{v.name}") for v in self.variables]
        self.t0 = time.monotonic()
        self.restarts = 0
        self.updates = 0
        self.requests_slowed = 0

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.cfg.host}:{self.port}{self.cfg.path}"

    @staticmethod
    def node_id(name: str) -> str:
        return f"ns=2;s={name}"

    async def start(self) -> None:
        """Start a brand-new server (fresh address space) on ``port``."""
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.cfg.host}:{self.port}{self.cfg.path}")
        server.set_server_name("otgate OPC UA simulator")
        idx = await server.register_namespace("urn:otgate:sim")
        folder = await server.nodes.objects.add_object(ua.NodeId("Sim", idx), "Sim")
        t = time.monotonic() - self.t0
        self.nodeids = []
        for var, sampler in zip(self.variables, self.samplers, strict=True):
            vtype = _VARIANT[var.type]
            node = await folder.add_variable(
                ua.NodeId(var.name, idx),
                var.name,
                ua.Variant(_convert(sampler(t), var.type), vtype),
            )
            if var.writable:
                await node.set_writable()
            self.nodeids.append(node.nodeid)
        self._slow_sessions(server)
        await server.start()
        if self.port == 0:
            self.port = server.bserver.port
        self.server = server

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            with contextlib.suppress(Exception):  # a half-started server may fail to stop
                await server.stop()

    async def restart(self, down_s: float = 0.0) -> None:
        self.restarts += 1
        log.info("sim_fault kind=opcua_restart port=%d down_s=%.1f", self.port, down_s)
        await self.stop()
        await anyio.sleep(down_s)
        await self.start()

    async def update(self) -> None:
        """Write the next sample of every variable (one source timestamp for all)."""
        server = self.server
        if server is None:
            return
        t = time.monotonic() - self.t0
        now = datetime.now(UTC)
        bad_p = self.faults.bad_status_probability
        bad = ua.StatusCode(getattr(ua.StatusCodes, self.faults.bad_status))
        for var, sampler, nodeid in zip(self.variables, self.samplers, self.nodeids, strict=True):
            if var.writable:
                continue  # holds what a client wrote
            value = sampler(t)
            if bad_p and self.rng.random() < bad_p:
                dv = ua.DataValue(
                    ua.Variant(), StatusCode=bad, SourceTimestamp=now, ServerTimestamp=now
                )
            else:
                variant = ua.Variant(_convert(value, var.type), _VARIANT[var.type])
                dv = ua.DataValue(variant, SourceTimestamp=now, ServerTimestamp=now)
            await server.write_attribute_value(nodeid, dv)
        self.updates += 1

    async def run_updates(self) -> None:
        next_at = time.monotonic()
        while True:
            await self.update()
            next_at += self.cfg.update_interval
            now = time.monotonic()
            if next_at < now:
                next_at = now
            await anyio.sleep(next_at - now)

    async def run_faults(self) -> None:
        every = self.faults.restart_every_s
        if every is None:
            await anyio.sleep_forever()
        while True:
            await anyio.sleep(every)
            await self.restart(self.faults.restart_down_s)

    def _slow_sessions(self, server: Server) -> None:
        """Wrap every new session's request handlers with the slow-reply fault."""
        iserver = server.iserver
        create = iserver.create_session
        sim = self

        def create_session(*args: Any, **kwargs: Any) -> Any:
            session = create(*args, **kwargs)
            for name in _SLOWED:
                setattr(session, name, _slowed(getattr(session, name), sim))
            return session

        iserver.create_session = create_session  # type: ignore[method-assign]


def _slowed(method: Any, sim: OpcUaSimulator) -> Any:
    async def call(*args: Any, **kwargs: Any) -> Any:
        f = sim.faults
        if f.slow_reply_s and sim.rng.random() < f.slow_probability:
            sim.requests_slowed += 1
            await asyncio.sleep(f.slow_reply_s)
        return await method(*args, **kwargs)

    return call


def _convert(value: Any, vtype: VarType) -> Any:
    if vtype in (VarType.DOUBLE, VarType.FLOAT):
        return float(value)
    if vtype in (VarType.INT32, VarType.INT64):
        return round(value)
    if vtype is VarType.BOOLEAN:
        return bool(value)
    return str(value)


async def run_opcua_simulator(
    cfg: OpcUaSimConfig,
    *,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
    handle: list[OpcUaSimulator] | None = None,
) -> None:
    """Serve ``cfg`` until cancelled; ``started()`` gets the endpoint URL.

    ``handle``, when given, receives the ``OpcUaSimulator`` (for tests/benches).
    """
    sim = OpcUaSimulator(cfg)
    try:
        await sim.start()
        if handle is not None:
            handle.append(sim)
        log.info("sim_started kind=opcua url=%s variables=%d", sim.url, len(sim.variables))
        async with anyio.create_task_group() as tg:
            tg.start_soon(sim.run_updates)
            tg.start_soon(sim.run_faults)
            task_status.started(sim.url)
    finally:
        with anyio.CancelScope(shield=True):
            await sim.stop()
