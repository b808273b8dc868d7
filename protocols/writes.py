"""Writable points: the limits and the role of a point that accepts writes.

A point is writable when its config says ``writable = true``; its ``write``
table (optional) narrows what may be written and who may write it::

    [[adapters.groups.points]]
    parameter = "setpoint"
    address = 10
    type = "float32"
    writable = true
    write = { min = 0.0, max = 120.0, role = "engineer" }

Both the gateway root (before a request is logged) and the owning session
(before the device is touched) check a value with ``check_value``, so a
config reload between the two cannot let a value through that the running
config refuses.
"""

from __future__ import annotations

import math
from typing import Any

from otgate.actors.records import Value
from otgate.config.base import StrictStruct
from otgate.supervisors.access import Role


class WriteSpec(StrictStruct, kw_only=True):
    """Limits and permission of a writable point."""

    min: float | None = None
    """Smallest value that may be written (engineering units, before scaling)."""
    max: float | None = None
    """Largest value that may be written."""
    allowed: list[Value] | None = None
    """If set, the only values that may be written (e.g. modes ``[0, 1, 2]``)."""
    role: Role = Role.ENGINEER
    """Weakest role allowed to write it (viewer | operator | engineer | admin)."""
    read_back: bool = True
    """Read the value back after the write; WRITTEN only when it equals."""

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("write.min must be <= write.max")
        if self.allowed is not None and not self.allowed:
            raise ValueError("write.allowed must not be empty (leave it out instead)")


DEFAULT_SPEC = WriteSpec()
MAX_TEXT = 1024
"""Longest text value a write request may carry."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def check_value(spec: WriteSpec, value: Any) -> str | None:
    """Why ``value`` may not be written under ``spec`` (None when it may)."""
    if not isinstance(value, bool | int | float | str):
        return f"value {value!r}: expected a number, a boolean or a string"
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return f"text value longer than {MAX_TEXT} characters"
    if isinstance(value, float) and not math.isfinite(value):
        return f"value {value!r} is not a finite number"
    if spec.allowed is not None and not any(_same(value, a) for a in spec.allowed):
        return f"value {value!r} not in allowed values {spec.allowed!r}"
    if spec.min is not None or spec.max is not None:
        if not _is_number(value):
            return f"value {value!r}: this point has numeric limits"
        if spec.min is not None and value < spec.min:
            return f"value {value!r} below min {spec.min:g}"
        if spec.max is not None and value > spec.max:
            return f"value {value!r} above max {spec.max:g}"
    return None


def check_role(spec: WriteSpec, role: str) -> str | None:
    """Why a caller with ``role`` may not write (None when it may)."""
    try:
        have = Role(role)
    except ValueError:
        return f"unknown role {role!r}"
    if not have.allows(spec.role):
        return f"role {role} cannot write this point; needs {spec.role.value}"
    return None


def writable_index(adapter: Any) -> list[tuple[str, str, WriteSpec]]:
    """``(asset, parameter, limits)`` of an adapter config's writable points.

    Light on purpose (no protocol library imported): the gateway root uses it
    to route and check requests. Modbus points sit in ``groups`` (asset may
    come from the group), other protocols list ``points``.
    """
    groups = getattr(adapter, "groups", None)
    if groups is not None:
        pairs = [(g, p) for g in groups for p in getattr(g, "points", ())]
    else:
        pairs = [(None, p) for p in getattr(adapter, "points", ())]
    return [
        (
            getattr(p, "asset_id", None) or getattr(g, "asset_id", None) or "",
            p.parameter,
            getattr(p, "write", None) or DEFAULT_SPEC,
        )
        for g, p in pairs
        if getattr(p, "writable", False)
    ]
