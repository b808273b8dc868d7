"""``/metrics``: the supervision tree in Prometheus text format, built per scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from otgate.actors.messages import Snapshot
from otgate.actors.records import AlarmSeverity, AlarmState
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


AlarmCounts = dict[str, dict[tuple[str, str], int]]
"""``AlarmTable.counts()``: per (state, severity), and active / unacked per severity."""


class AlarmCollector:
    """The alarm table as gauges: every state and severity, zeros included."""

    def __init__(self, counts: Callable[[], AlarmCounts]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        alarms = GaugeMetricFamily(
            "otgate_alarms", "Alarms by state and severity", labels=["state", "severity"]
        )
        for st in AlarmState:
            for sev in AlarmSeverity:
                alarms.add_metric([st.value, sev.value], counts["state"].get((st.value, sev.value), 0))
        yield alarms
        for key, name, text in (
            ("active", "otgate_alarms_active", "Alarms whose condition is active"),
            ("unacked", "otgate_alarms_unacknowledged", "Alarms not yet acknowledged"),
        ):
            g = GaugeMetricFamily(name, text, labels=["severity"])
            for sev in AlarmSeverity:
                g.add_metric([sev.value], counts[key].get(("", sev.value), 0))
            yield g


def render(
    snapshot: Callable[[], Snapshot], alarm_counts: Callable[[], AlarmCounts] | None = None
) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TreeCollector(snapshot))
    if alarm_counts is not None:
        registry.register(AlarmCollector(alarm_counts))
    return generate_latest(registry)
