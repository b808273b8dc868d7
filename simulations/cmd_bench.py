"""``otgate bench NAME``: benchmarks that print numbers, never pass/fail."""

from __future__ import annotations

import argparse
import importlib

from otgate.simulations.report import Report

# bench name -> module with `TITLE` and `async def run(report, args)`
BENCHES: dict[str, str] = {
    "supervision": "otgate.simulations.bench_supervision",
    "log": "otgate.simulations.bench_log",
    "protocols": "otgate.simulations.bench_protocols",
    "pipeline": "otgate.simulations.bench_pipeline",
    "alerts": "otgate.simulations.bench_alerts",
    "peer": "otgate.simulations.bench_peer",
    "alarms": "otgate.simulations.bench_alarms",
    "writes": "otgate.simulations.bench_writes",
    "sinks": "otgate.simulations.bench_sinks",
    "aggregator-memory": "otgate.simulations.bench_aggregator_memory",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its numbers")
    p.add_argument("name", choices=sorted(BENCHES))
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import anyio

    module = importlib.import_module(BENCHES[args.name])
    report = Report(module.TITLE, as_json=args.json)
    anyio.run(module.run, report, args)
    report.finish()
    return 0
