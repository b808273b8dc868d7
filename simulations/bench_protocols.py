"""``otgate bench protocols``: every protocol's session against its simulator.

Runs the Modbus bench (``bench_modbus``), then the OPC UA and MQTT benches
(``bench_opcua``, ``bench_mqtt``) when those modules exist. Each adds rows
(points/s, µs gateway CPU per point, ratio to the peer's own ceiling
measured in the same run) to one report.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from otgate.simulations import bench_modbus

TITLE = "protocols: device sessions against their simulators (points/s, gateway CPU/point)"

OPTIONAL = ("otgate.simulations.bench_opcua", "otgate.simulations.bench_mqtt")


async def run(report: Any, args: argparse.Namespace) -> None:
    """Run each protocol bench in turn; a missing optional bench is skipped."""
    await bench_modbus.run(report, args)
    for name in OPTIONAL:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise  # the bench exists but one of its imports is missing
            report.progress(f"{name.rsplit('.', 1)[1]}: not present, skipped")
            continue
        await module.run(report, args)
