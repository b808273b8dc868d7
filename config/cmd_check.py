"""``otgate check-config FILE``: validate without starting anything."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate a gateway config file")
    p.add_argument("file", type=Path)
    p.add_argument(
        "--no-secrets",
        action="store_true",
        help="check ${secret:NAME} references for form only (secrets not on this machine)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from otgate.config.load import ConfigError, load_config
    from otgate.supervisors.plan import plan_bulkheads

    try:
        loaded = load_config(args.file, resolve=not args.no_secrets)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return 1
    cfg = loaded.config
    plans = plan_bulkheads(cfg)
    print(
        f"{args.file}: OK — gateway {cfg.gateway.id}, {len(cfg.adapters)} adapter(s) in "
        f"{len(plans)} bulkhead(s), log {cfg.log.backend.value}, status {cfg.status.listen}"
    )
    return 0
