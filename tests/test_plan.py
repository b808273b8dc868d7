"""Bulkhead plans: grouping, start order, and which changes restart what on reload."""

from __future__ import annotations

import msgspec
import pytest

from otgate.config.load import ConfigError, decode
from otgate.supervisors.plan import parts, plan_bulkheads

BASE = {
    "adapters": [
        {"type": "synthetic", "id": "a", "asset_id": "x", "points": [{"parameter": "p"}]},
        {"type": "synthetic", "id": "b", "asset_id": "y", "points": [{"parameter": "p"}]},
    ],
    "processing": {"validator": {}, "aggregator": {}},
}


def digests(tree: dict) -> dict[str, str]:
    return {p.id: p.digest for p in plan_bulkheads(decode(tree))}


def test_parts_get_their_own_bulkhead_in_start_order() -> None:
    plans = plan_bulkheads(decode(BASE))
    assert [p.id for p in plans] == ["a", "b", "processing", "log"]
    grouped = plan_bulkheads(decode({**BASE, "bulkheads": [{"id": "line", "members": ["b", "a"]}]}))
    assert [(p.id, p.members) for p in grouped][:2] == [("line", ("b", "a")), ("processing", ("processing",))]


def test_a_part_change_restarts_only_its_bulkhead() -> None:
    before = digests(BASE)
    tree = msgspec.json.decode(msgspec.json.encode(BASE))
    tree["adapters"][1]["interval"] = 5.0
    after = digests(tree)
    assert [k for k in before if before[k] != after[k]] == ["b"]


def test_shared_settings_restart_every_bulkhead_and_status_none() -> None:
    before = digests(BASE)
    assert digests({**BASE, "supervision": {"heartbeat_interval": 0.5}}).keys() == before.keys()
    changed = digests({**BASE, "supervision": {"heartbeat_interval": 0.5}})
    assert all(changed[k] != before[k] for k in before)
    assert digests({**BASE, "defaults": {"memory_limit_mib": 100}}) != before
    assert digests({**BASE, "status": {"listen": "127.0.0.1:9999"}}) == before


def test_aggregator_apart_is_a_part_of_its_own() -> None:
    """``aggregator_apart``: the aggregator in bulkhead ``aggregation``, the other
    stages in ``processing``; a bulkhead may name it; its id is reserved."""
    tree = {**BASE, "processing": {"validator": {}, "aggregator": {}, "aggregator_apart": True}}
    cfg = decode(tree)
    assert [p.id for p in plan_bulkheads(cfg)] == ["a", "b", "processing", "aggregation", "log"]
    stages = {pid: (part.cfg.validator.enabled, part.cfg.aggregator.enabled,
                    part.cfg.alarms.enabled)
              for pid, part in parts(cfg).items() if pid in ("processing", "aggregation")}
    assert stages == {"processing": (True, False, True), "aggregation": (False, True, False)}
    grouped = plan_bulkheads(decode({**tree, "bulkheads": [
        {"id": "crunch", "members": ["aggregation", "a"]}]}))
    assert [(p.id, p.members) for p in grouped][:3] == [
        ("crunch", ("aggregation", "a")), ("b", ("b",)), ("processing", ("processing",))]
    # a disabled aggregator leaves one part
    off = {**tree, "processing": {**tree["processing"], "aggregator": {"enabled": False}}}
    assert "aggregation" not in [p.id for p in plan_bulkheads(decode(off))]
    with pytest.raises(ConfigError, match="'aggregation' names the aggregator's part"):
        decode({**tree, "adapters": [*tree["adapters"], {**tree["adapters"][0],
                                                         "id": "aggregation"}]})
