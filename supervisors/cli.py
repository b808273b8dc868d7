"""The ``otgate`` command line. Each command lives in its own module, which
exposes ``register(subparsers)``; modules are imported only when needed."""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module defining register(subparsers)
COMMANDS: dict[str, str] = {
    "run": "otgate.supervisors.cmd_run",
    "check-config": "otgate.config.cmd_check",
    "status": "otgate.supervisors.cmd_status",
    "log": "otgate.actors.log.cmd",
    "alarms": "otgate.supervisors.cmd_alarms",
    "dlq": "otgate.supervisors.cmd_dlq",
    "simulate": "otgate.simulations.cmd_simulate",
    "bench": "otgate.simulations.cmd_bench",
    "control-plane": "otgate.config.control_plane.cmd",
    "mcp": "otgate.supervisors.mcptools.cmd",
    "write": "otgate.supervisors.cmd_write",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otgate", description="Edge runtime for industrial PCs (see README)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name)
            continue
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Import only the module of the command asked for: `otgate status` stays fast.
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
