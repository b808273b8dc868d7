"""Process titles, so ``ps`` and ``top`` tell otgate's processes apart:
``otgate: gateway <id>`` (the root), ``otgate: forkserver``,
``otgate: bulkhead <id>``. ``setproctitle`` rewrites the command line
(``/proc/<pid>/cmdline``, ``ps -o args``) and the short name (``ps -o comm``)."""

from __future__ import annotations

from setproctitle import setproctitle


def set_title(role: str) -> None:
    """Title this process ``otgate: <role>``."""
    setproctitle(f"otgate: {role}")
