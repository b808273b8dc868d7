"""``otgate simulate --scenario FILE``: run a scenario, print the checker's verdict."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import msgspec

from otgate.simulations.harness.scenario import Scenario
from otgate.simulations.report import Report


def load_scenario(path: Path) -> Scenario:
    from otgate.config.load import ConfigError, parse, path_first

    tree = parse(path.read_bytes(), str(path))
    try:
        return msgspec.convert(tree, Scenario, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(path), [path_first(str(exc), Scenario, tree)]) from None


def summary(streams) -> dict[str, float]:
    s = list(streams.values())
    return {
        "produced": sum(x.produced for x in s),
        "read": sum(len(x.read) for x in s),
        "delivered": sum(len(x.delivered) for x in s),
        "lost": sum(len(x.lost) for x in s),
        "duplicates": sum(x.duplicates for x in s),
        "not_read": sum(x.not_read for x in s),
        "max_latency_ms": round(max((x.max_latency_ms for x in s), default=0.0), 1),
    }


def verdict(outcome) -> list[str]:
    """Why the run failed; empty when nothing was lost or duplicated, every device
    was read and delivered from, the gateway stopped cleanly and nothing is FAILED."""
    problems = []
    for st in outcome.streams.values():
        if st.lost:
            problems.append(f"{st.device}: lost seq {sorted(st.lost)[:20]}")
        if st.duplicates:
            problems.append(f"{st.device}: {st.duplicates} duplicate rows")
        if not st.read or not st.delivered:
            problems.append(f"{st.device}: nothing read or delivered")
    if outcome.exit_code != 0:
        problems.append(f"gateway exit code {outcome.exit_code} (expected 0)")
    if outcome.failed:
        problems.append(f"FAILED at the end: {', '.join(outcome.failed)}")
    return problems


def run_scenario_command(args: argparse.Namespace) -> int:
    import anyio

    from otgate.config.load import ConfigError
    from otgate.simulations.harness.run import run_scenario
    from otgate.supervisors.logs import setup_logging

    try:
        sc = load_scenario(args.scenario)
    except (ConfigError, OSError) as exc:
        print(f"otgate simulate: {exc}", file=sys.stderr)
        return 2
    setup_logging("WARNING")
    report = Report(f"otgate simulate --scenario {sc.name}", as_json=args.json)
    with tempfile.TemporaryDirectory(prefix="otgate-harness-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        outcome = anyio.run(run_scenario, sc, workdir, report)
    streams = outcome.streams
    for st in streams.values():
        report.add(
            device=st.device,
            kind=st.kind,
            produced=st.produced,
            read=len(st.read),
            delivered=len(st.delivered),
            lost=len(st.lost),
            duplicates=st.duplicates,
            not_read=st.not_read,
            max_latency_ms=round(st.max_latency_ms, 1),
        )
    total = summary(streams)
    report.add(device="TOTAL", kind="", **total)
    report.finish()
    problems = verdict(outcome)
    ok = not problems
    print(
        ("PASS " if ok else "FAIL ") + " ".join(f"{k}={v:g}" for k, v in total.items()),
        file=sys.stderr if args.json else sys.stdout,
    )
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 0 if ok else 1
