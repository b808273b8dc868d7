"""From the config to process bulkheads: which parts share a process, and the
digests that tell a reload which parts changed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec
from otgate.config.schema import GatewayConfig


def digest(*parts: Any) -> str:
    """A stable digest of config Structs; equal config, equal digest."""
    h = hashlib.sha256()
    for part in parts:
        h.update(msgspec.json.encode(part))
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class BulkheadPlan:
    id: str
    members: tuple[str, ...]
    memory_limit_mib: int | None
    address_space_limit_mib: int | None
    digest: str


def parts(cfg: GatewayConfig) -> dict[str, Any]:
    """Every part that runs as an actor inside a bulkhead, by id, in start order."""
    return {p.id: p for p in (*cfg.simulators, *cfg.adapters)}


def plan_bulkheads(cfg: GatewayConfig) -> list[BulkheadPlan]:
    """Named bulkheads first (in config order), then one per remaining part."""
    all_parts = parts(cfg)
    grouped = {m for b in cfg.bulkheads for m in b.members}
    shared = (cfg.log, cfg.supervision.bulkhead, cfg.gateway.id)
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
