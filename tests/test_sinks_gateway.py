"""The HTTP sink inside a real ``otgate run``: synthetic readings reach an ingest
receiver process, and the sink's lag and throughput show in /health and /metrics."""

from __future__ import annotations

import json
import urllib.request

from peers.gateway import gateway_fixture, synthetic, wait_for  # noqa: F401

from otgate.simulations.bench_sinks import start_ingest, stop


def received(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as resp:
        return json.loads(resp.read())["records"]


def test_http_sink_in_a_running_gateway_reports_lag_and_throughput(gateway, tmp_path):
    proc, port = start_ingest()
    try:
        gw = gateway(f"""
[gateway]
state_dir = "{tmp_path / 'state'}"
[status]
listen = "127.0.0.1:0"
[[sinks]]
type = "http"
id = "cloud"
url = "http://127.0.0.1:{port}/ingest"
topics = ["telemetry.raw"]
batch_wait_s = 0.2
fetch_timeout_s = 0.1
""" + synthetic("a", "pump-1", interval=0.01))
        wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, "the gateway ready")
        wait_for(lambda: received(port) >= 100, 30, "readings at the receiver")

        def sink() -> dict:
            (node,) = [c for c in gw.component("cloud")["children"] if c["id"] == "sink.cloud"]
            return node

        wait_for(lambda: sink()["metrics"]["records_per_second"] > 0, 15, "a throughput")
        node = sink()
        assert node["kind"] == "sink.http" and node["state"] == "RUNNING"
        assert node["children"][0]["kind"] == "circuit_breaker"
        assert 0 <= node["metrics"]["lag_records"] < 1000
        status, text = gw.get("/metrics")
        assert status == 200
        for name in ("lag_records", "records_per_second", "delivered_total", "rejected_total"):
            assert f'otgate_component_metric{{id="sink.cloud",name="{name}",parent="cloud"}}' \
                in text, name
    finally:
        stop(proc)
