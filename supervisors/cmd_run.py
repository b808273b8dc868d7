"""``otgate run --config FILE [--status-listen HOST:PORT]``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

EX_CONFIG = 78  # systemd's RestartPreventExitStatus: a bad config is not retried


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the gateway in the foreground")
    p.add_argument("--config", required=True, type=Path, help="gateway TOML file")
    p.add_argument(
        "--status-listen",
        metavar="HOST:PORT",
        help="status endpoint address; overrides [status] listen (port 0 = any free port)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import anyio

    from otgate.config.load import ConfigError, default_state_dir, load_config
    from otgate.supervisors.gateway import LAST_GOOD, Gateway
    from otgate.supervisors.logs import setup_logging
    from otgate.supervisors.titles import set_title

    redactor = setup_logging()
    log = logging.getLogger("otgate.gateway")
    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        cache = default_state_dir(args.config, os.environ) / LAST_GOOD
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        if not cache.exists():
            return EX_CONFIG
        log.error("config_invalid_using_last_good config=%s cache=%s", args.config, cache)
        loaded = load_config(cache, base=args.config.resolve().parent)
    redactor.update(loaded.secrets)
    set_title(f"gateway {loaded.config.gateway.id}")
    if args.status_listen:
        from otgate.config.load import decode

        try:
            decode({"status": {"listen": args.status_listen}}, "--status-listen")
        except ConfigError as exc:
            print(f"otgate run: --status-listen: {'; '.join(exc.problems)}", file=sys.stderr)
            return EX_CONFIG
    gateway = Gateway(
        loaded, args.config, status_listen=args.status_listen, redactor_update=redactor.update
    )
    return anyio.run(gateway.run)
