"""A suggested config change, as a diff: never applied.

``suggest`` takes the running config tree (``GET /config``, secrets already
hidden) and changes as ``{"dotted.path[0].key": new value}``, checks the
result against the config schema (no I/O, like ``otgate check-config``) and
returns a unified diff of the two trees as JSON. Credentials cannot be
suggested: a path whose last key names one is refused. Applying the change
stays with a person (edit the file and reload, or publish it on the control
plane with their own credentials).
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from typing import Any

from otgate.config.load import ConfigError, decode
from otgate.supervisors.service.reads import CREDENTIAL_KEYS

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class BadChange(ValueError):
    """A change that cannot be placed in the config tree."""


def _steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    for key, index in _STEP.findall(path):
        steps.append(int(index) if index else (int(key) if key.isdigit() else key))
    if not steps:
        raise BadChange(f"{path!r}: expected a dotted path such as adapters[0].interval")
    return steps


def _set(tree: Any, path: str, value: Any) -> None:
    steps = _steps(path)
    last = steps[-1]
    if isinstance(last, str) and CREDENTIAL_KEYS.search(last):
        raise BadChange(f"{path}: credentials cannot be suggested (set them as secrets)")
    node = tree
    for step in steps[:-1]:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            raise BadChange(f"{path}: no {step!r} in the running config") from None
    if isinstance(last, int):
        if not isinstance(node, list) or not 0 <= last <= len(node):
            raise BadChange(f"{path}: index {last} is outside the list")
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise BadChange(f"{path}: {last!r} is not a table")


def _lines(tree: Any) -> list[str]:
    return json.dumps(tree, indent=2, sort_keys=True, default=str).splitlines(keepends=True)


def suggest(running: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The diff ``changes`` would make to ``running`` and whether the result
    is a valid config (``problems`` lists why not). Nothing is applied."""
    if not changes:
        raise BadChange("changes: expected at least one {path: value}")
    proposed = copy.deepcopy(running)
    for path, value in changes.items():
        _set(proposed, path, value)
    try:
        decode(proposed, "suggestion")
        problems: list[str] = []
    except ConfigError as exc:
        problems = list(exc.problems)
    diff = "".join(
        difflib.unified_diff(_lines(running), _lines(proposed), "running", "suggested")
    )
    return {
        "applied": False,
        "valid": not problems,
        "problems": problems,
        "diff": diff,
        "how_to_apply": (
            "a person with an engineer token applies it: edit the config file and "
            "reload (SIGHUP), or publish it on the control plane"
        ),
    }
