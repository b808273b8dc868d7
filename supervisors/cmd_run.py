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
    if loaded.config.control_plane is not None:
        loaded = _cached_or(loaded, log)
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


def _cached_or(bootstrap, log: logging.Logger):
    """With a control plane, boot the last good pulled config when there is one
    (offline as long as needed); the agent refreshes it in the background."""
    from otgate.config.control_plane.document import load_cached
    from otgate.config.load import ConfigError

    try:
        cached = load_cached(bootstrap)
    except ConfigError as exc:
        log.error("control_plane_cache_invalid problems=%s", "; ".join(exc.problems))
        return bootstrap
    if cached is None:
        log.info("control_plane_no_cache using=%s", bootstrap.source.value)
        return bootstrap
    log.info("control_plane_cache_used version=%d", cached.config.config_version)
    return cached
