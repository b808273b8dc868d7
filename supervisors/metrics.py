"""``/metrics``: the supervision tree in Prometheus text format, built per scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from otgate.actors.messages import Snapshot
from otgate.supervisors.health import rollup

_STATUSES = ("HEALTHY", "DEGRADED", "UNHEALTHY", "FAILED")


class TreeCollector:
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        root = self._snapshot()
        status = rollup(root)
        g = GaugeMetricFamily(
            "otgate_gateway_status", "Gateway roll-up (1 = current)", labels=["status"]
        )
        for s in _STATUSES:
            g.add_metric([s], 1.0 if s == status else 0.0)
        yield g
        # One series per component, labelled with its current state (value 1); a
        # state change ends the old series. Not one 0/1 series per possible state:
        # that is 7 lines per component, and `grep` shows the state directly.
        state = GaugeMetricFamily(
            "otgate_component_state",
            "Component state: one series per component, its current state as the label, value 1",
            labels=["id", "kind", "parent", "state"],
        )
        restarts = CounterMetricFamily(
            "otgate_component_restarts", "Restarts", labels=["id", "kind", "parent"]
        )
        depth = GaugeMetricFamily(
            "otgate_mailbox_depth", "Control messages queued", labels=["id", "parent"]
        )
        beat = GaugeMetricFamily(
            "otgate_heartbeat_age_seconds", "Seconds since the last heartbeat", labels=["bulkhead"]
        )
        values = GaugeMetricFamily(
            "otgate_component_metric", "Actor-reported numbers", labels=["id", "parent", "name"]
        )
        for parent, node in _nodes(root):
            state.add_metric([node.id, node.kind, parent, node.state.value], 1.0)
            restarts.add_metric([node.id, node.kind, parent], float(node.restarts))
            depth.add_metric([node.id, parent], float(node.mailbox_depth))
            if node.heartbeat_age_s is not None:
                beat.add_metric([node.id], node.heartbeat_age_s)
            for name, value in node.metrics.items():
                values.add_metric([node.id, parent, name], value)
        yield from (state, restarts, depth, beat, values)


def _nodes(root: Snapshot, parent: str = "") -> Iterator[tuple[str, Snapshot]]:
    for child in root.children:
        yield root.id, child
        yield from _nodes(child, root.id)


def render(snapshot: Callable[[], Snapshot]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TreeCollector(snapshot))
    return generate_latest(registry)
