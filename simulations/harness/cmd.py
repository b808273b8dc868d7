"""``otgate simulate --scenario FILE``: run a scenario, print the checker's verdict."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import msgspec

from otgate.simulations.harness.resources import table
from otgate.simulations.harness.scenario import Scenario, stretch
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
        if not st.read and not st.delivered:  # read, not delivered: lost above
            problems.append(f"{st.device}: nothing read or delivered")
        missed, counted = st.gaps
        if st.max_not_read is not None and missed > st.max_not_read * counted:
            problems.append(
                f"{st.device}: missed {missed} of {counted} counts since its first read "
                f"(more than {st.max_not_read:.0%}: its polling was disturbed)"
            )
    if outcome.exit_code != 0:
        problems.append(f"gateway exit code {outcome.exit_code} (expected 0)")
    if outcome.failed:
        problems.append(f"FAILED at the end: {', '.join(outcome.failed)}")
    if outcome.alarms is not None:
        problems += outcome.alarms.problems
    return problems + outcome.problems


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
    if args.duration is not None:
        if args.duration <= 0:
            print("otgate simulate: --duration must be > 0", file=sys.stderr)
            return 2
        sc = stretch(sc, args.duration)
    setup_logging("WARNING")
    report = Report(f"otgate simulate --scenario {sc.name}", as_json=args.json)
    with tempfile.TemporaryDirectory(prefix="otgate-harness-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        outcome = anyio.run(run_scenario, sc, workdir, report)
    if outcome.skipped:
        print(f"SKIP {sc.name}: {outcome.skipped}")
        return 0
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
    if outcome.alarms is not None:  # on the verdict line: the alarms' own counts
        total.update(outcome.alarms.counts)
    _resources(sc, outcome, args.json)
    problems = verdict(outcome)
    ok = not problems
    print(
        ("PASS " if ok else "FAIL ") + " ".join(f"{k}={v:g}" for k, v in total.items()),
        file=sys.stderr if args.json else sys.stdout,
    )
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 0 if ok else 1


def _resources(sc: Scenario, outcome, as_json: bool) -> None:
    """The soak's second table: memory, file descriptors, log size; the load's rate."""
    if outcome.samples is not None:
        res = Report(
            f"resources over {sc.duration_s:g}s (after {sc.resources.warmup_s:g}s warm-up)",
            as_json=as_json,
        )
        for row in table(outcome.samples):
            res.add(**row)
        res.finish()
    if sc.load.devices:
        offered = sc.load.points_per_s
        got = outcome.load_landed / sc.duration_s
        print(
            f"load: offered {offered:,.0f} points/s, {got:,.0f} points/s in PostgreSQL "
            f"by the end of production ({got / offered:.0%})",
            file=sys.stderr if as_json else sys.stdout,
        )
