"""``/metrics``: the supervision tree in Prometheus text format, built per scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from otgate.actors.messages import Snapshot, State
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
        state = GaugeMetricFamily(
            "otgate_component_state",
            "Component state (1 = current)",
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
            for s in State:
                state.add_metric(
                    [node.id, node.kind, parent, s.value], 1.0 if node.state is s else 0.0
                )
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
