"""``otgate simulate FILE``: run simulated devices in the foreground.

FILE holds ``[[simulators]]`` tables (the same ones a gateway config can
carry). Each simulator runs until Ctrl-C; endpoints are printed as they come
up, and a table of what ran is printed at the end (``--json`` for machines).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import msgspec

from otgate.config.base import StrictStruct
from otgate.config.registry import SimulatorConfig


class SimulationFile(StrictStruct):
    simulators: list[SimulatorConfig] = []
    """Simulated devices to run."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="run simulated devices, or a fault-injection scenario (--scenario)"
    )
    p.add_argument("file", type=Path, nargs="?", help="TOML file with [[simulators]] tables")
    p.add_argument(
        "--scenario",
        type=Path,
        help="run a 'nothing lost' scenario (simulations/scenarios/*.toml) and check it",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="keep logs and state here (FILE: default ./state next to it, like a gateway)",
    )
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--json", action="store_true", help="print the final table as JSON")
    p.set_defaults(func=run)


def load(path: Path) -> SimulationFile:
    from otgate.config.load import ConfigError, parse, path_first

    tree = parse(path.read_bytes(), str(path))
    tree = {"simulators": tree.get("simulators", [])}
    try:
        return msgspec.convert(tree, SimulationFile, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(path), [path_first(str(exc), SimulationFile, tree)]) from None


def _context(args: argparse.Namespace):
    """Simulators publish nothing; what they keep (the demo PostgreSQL's data)
    goes to ``--workdir``, else to the state dir a gateway would use for FILE."""
    import os

    from otgate.actors.context import BuildContext
    from otgate.config.load import default_state_dir

    async def nowhere(readings) -> None:
        raise RuntimeError("simulators write nothing to the log")

    state_dir = args.workdir or default_state_dir(args.file, os.environ)
    return BuildContext(gateway_id="simulate", publish=nowhere, state_dir=state_dir)


def run(args: argparse.Namespace) -> int:
    if args.scenario is not None:
        from otgate.simulations.harness.cmd import run_scenario_command

        return run_scenario_command(args)
    if args.file is None:
        print("otgate simulate: give a FILE of [[simulators]] or --scenario FILE", file=sys.stderr)
        return 2
    import anyio

    from otgate.config.load import ConfigError
    from otgate.simulations.report import Report
    from otgate.supervisors.logs import setup_logging

    try:
        sims = load(args.file).simulators
    except (ConfigError, OSError) as exc:
        print(f"otgate simulate: {exc}", file=sys.stderr)
        return 1
    if not sims:
        print(f"otgate simulate: {args.file} has no [[simulators]]", file=sys.stderr)
        return 1
    setup_logging("WARNING")
    report = Report("otgate simulate", as_json=args.json)
    ctx = _context(args)
    actors = [s.build(ctx) for s in sims]
    t0 = time.monotonic()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for actor in actors:
                tg.start_soon(actor.run)
            for actor in actors:
                with anyio.fail_after(30):
                    while not actor.endpoint:
                        await anyio.sleep(0.05)
                report.progress(f"{actor.id}: {actor.endpoint}")
            report.progress("running; Ctrl-C to stop")
            if args.duration is not None:
                await anyio.sleep(args.duration)
                tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    except KeyboardInterrupt:
        pass
    for sim, actor in zip(sims, actors, strict=True):
        report.add(
            id=sim.id,
            type=type(sim).__name__,
            endpoint=actor.endpoint,
            ran_s=round(time.monotonic() - t0, 1),
        )
    report.finish()
    return 0
