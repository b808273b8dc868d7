"""From the config to process bulkheads: which parts share a process, and the
digests that tell a reload which parts changed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec

from otgate.actors.context import BuildContext
from otgate.actors.log.config import Backend, LogConfig
from otgate.actors.processing import ProcessingConfig
from otgate.config.schema import AGGREGATION_ID, LOG_ID, PROCESSING_ID, GatewayConfig
from otgate.supervisors.spec import ChildSpec, Strategy, SupervisorFlags
from otgate.supervisors.supervisor import Supervisor


def digest(*parts: Any) -> str:
    """A stable digest of config Structs; equal config, equal digest."""
    h = hashlib.sha256()
    for part in parts:
        h.update(msgspec.json.encode(part))
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class ProcessingPart:
    """The validator, aggregator and alarm evaluator under one rest_for_one
    supervisor: when the validator restarts, the stages behind it restart too.
    With ``aggregator_apart``, two parts: the aggregator alone (``aggregation``)
    and the others; a validator restart then leaves the aggregator running (the
    stages share nothing but the log, where it reads on from its own offsets)."""

    cfg: ProcessingConfig
    flags: SupervisorFlags
    id: str = PROCESSING_ID

    def build(self, ctx: BuildContext) -> Supervisor:
        stages = [a.id for a in self.cfg.build(ctx)]  # no I/O: just the enabled stages' ids
        specs = [
            ChildSpec(id=name, start=lambda i=i: self.cfg.build(ctx)[i])
            for i, name in enumerate(stages)
        ]
        flags = msgspec.structs.replace(self.flags, strategy=Strategy.REST_FOR_ONE)
        return Supervisor(self.id, specs, flags)


@dataclass(frozen=True)
class LogRetentionPart:
    """The embedded log's retention and disk tiers, in a bulkhead of their own."""

    cfg: LogConfig
    id: str = LOG_ID

    def build(self, ctx: BuildContext) -> Any:
        from otgate.actors.log.actor import LogMaintenance

        return LogMaintenance("retention", ctx.log, self.cfg, ctx.state_dir, role="retention")


@dataclass(frozen=True)
class BulkheadPlan:
    id: str
    members: tuple[str, ...]
    memory_limit_mib: int | None
    address_space_limit_mib: int | None
    digest: str


def parts(cfg: GatewayConfig) -> dict[str, Any]:
    """Every part that runs as an actor inside a bulkhead, by id, in start order:
    simulated devices, sessions, processing, sinks, then the log's retention."""
    found: list[Any] = [*cfg.simulators, *cfg.adapters]
    if cfg.processing is not None:
        stages, aggregation = cfg.processing.split()
        found.append(ProcessingPart(stages, cfg.supervision.bulkhead))
        if aggregation is not None:
            found.append(ProcessingPart(aggregation, cfg.supervision.bulkhead, AGGREGATION_ID))
    found += cfg.sinks
    if cfg.log.backend is Backend.EMBEDDED:
        found.append(LogRetentionPart(cfg.log))
    return {p.id: p for p in found}


def plan_bulkheads(cfg: GatewayConfig) -> list[BulkheadPlan]:
    """Named bulkheads first (in config order), then one per remaining part."""
    all_parts = parts(cfg)
    grouped = {m for b in cfg.bulkheads for m in b.members}
    # Everything a bulkhead process reads besides its own parts: a change here
    # restarts every bulkhead on reload. (Status section and tokens live in the root.)
    shared = (cfg.log, cfg.supervision, cfg.gateway, cfg.defaults)
    plans = [
        BulkheadPlan(
            id=b.id,
            members=tuple(b.members),
            memory_limit_mib=b.memory_limit_mib or cfg.defaults.memory_limit_mib,
            address_space_limit_mib=b.address_space_limit_mib,
            digest=digest(b, *(all_parts[m] for m in b.members), *shared),
        )
        for b in cfg.bulkheads
    ]
    for pid, part in all_parts.items():
        if pid not in grouped:
            plans.append(
                BulkheadPlan(
                    id=pid,
                    members=(pid,),
                    memory_limit_mib=cfg.defaults.memory_limit_mib,
                    address_space_limit_mib=None,
                    digest=digest(part, *shared),
                )
            )
    return plans
