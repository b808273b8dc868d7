"""Kill one bulkhead of the demo plant, check that no sibling restarted; again
and again, each bulkhead in turn (the log's included). By default one round per
bulkhead (each killed once); the long variant (``--long``) runs 20 rounds, so
every bulkhead is killed again after it has been restarted before."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from peers.demo import demo_config, scratch_fixture  # noqa: F401
from peers.gateway import GatewayProcess, wait_for

from otgate.config.load import load_config
from otgate.supervisors.plan import plan_bulkheads

LONG_ROUNDS = 20

pytestmark = pytest.mark.skipif(
    not Path(shutil.which("mosquitto") or "/usr/sbin/mosquitto").exists(),
    reason="the demo plant needs Debian's mosquitto (tests/run.sh installs it)",
)


def tree(gw: GatewayProcess) -> dict[str, dict]:
    return {c["id"]: c for c in gw.health()["components"]}


def settled(gw: GatewayProcess) -> dict[str, dict] | None:
    """Every bulkhead RUNNING and every simulator serving, or None."""
    nodes = tree(gw)
    for node in nodes.values():
        if node["state"] != "RUNNING" or node["pid"] is None:
            return None
        if any(c["metrics"].get("serving") == 0 for c in node["children"]):
            return None
    return nodes


@pytest.mark.slow
@pytest.mark.parametrize(
    "rounds", [None, pytest.param(LONG_ROUNDS, marks=pytest.mark.long)], ids=["each-once", "20"]
)
def test_killing_one_bulkhead_never_restarts_a_sibling(
    tmp_path: Path, scratch: Path, rounds: int | None
) -> None:
    conf = demo_config(tmp_path, scratch)
    planned = [p.id for p in plan_bulkheads(load_config(conf).config)]
    gw = GatewayProcess(conf).start()
    try:
        # Round 0 kills as soon as /health/ready answers 200, while the plant is
        # still coming up (PostgreSQL in initdb, sessions connecting): a slow
        # start must not race the check. Later rounds kill a settled plant.
        wait_for(gw.ready, 60, "/health/ready")
        nodes = tree(gw)
        ids = list(nodes)
        assert "log" in ids and sorted(ids) == sorted(planned), ids
        kills = dict.fromkeys(ids, 0)
        for n in range(rounds or len(ids)):
            victim = ids[n % len(ids)]
            before = {i: (nodes[i]["pid"], nodes[i]["restarts"]) for i in ids}
            os.kill(before[victim][0], signal.SIGKILL)
            kills[victim] += 1

            def back(victim=victim, before=before):
                node = tree(gw)[victim]
                return node["state"] == "RUNNING" and node["pid"] not in (None, before[victim][0])

            wait_for(back, 30, f"round {n}: {victim} RUNNING again with a new pid")
            nodes = wait_for(lambda: settled(gw), 30, f"round {n}: the plant settled")
            moved = {
                i: (before[i], (nodes[i]["pid"], nodes[i]["restarts"]), nodes[i]["last_error"])
                for i in ids
                if i != victim and (nodes[i]["pid"], nodes[i]["restarts"]) != before[i]
            }
            assert not moved, f"round {n}: killing {victim} restarted siblings: {moved}"
            assert nodes[victim]["restarts"] == kills[victim]
        assert min(kills.values()) >= 1, kills
    finally:
        assert gw.stop() == 0
