"""What a config path accepts: the values of the enum, literal or tag found at a
path, so an error about a bad value can list the good ones.

msgspec says ``Invalid enum value 'flaot32' - at `$.adapters[0].groups[0].points[0].type` ``
and stops there; ``accepted_values`` walks the config type along that path (a
tagged union follows the ``type`` the file gives) and returns what the field
takes, here the Modbus data types.
"""

from __future__ import annotations

import re
from typing import Any

from msgspec import inspect as mi

_STEP = re.compile(r"\.?([A-Za-z_][\w-]*)|\[(\d+|\.\.\.)\]")


def accepted_values(root: type, tree: Any, path: str) -> list[str]:
    """The values the field at ``path`` (``a[0].b``) accepts; empty when it is no
    enum, literal or union tag, or when the path cannot be followed."""
    t: Any = mi.type_info(root)
    node = tree
    for m in _STEP.finditer(path):
        name, index = m.groups()
        t = _strip(t)
        if isinstance(t, mi.UnionType):
            members = [_strip(x) for x in t.types if not isinstance(x, mi.NoneType)]
            tagged = [x for x in members if isinstance(x, mi.StructType) and x.tag_field]
            if tagged and name == tagged[0].tag_field:
                return sorted(str(x.tag) for x in tagged)
            t = _member(members, tagged, node)
        if name is not None:
            if not isinstance(t, mi.StructType):
                return []
            if name == t.tag_field:  # a union of one tagged struct
                return [str(t.tag)]
            field = next((f for f in t.fields if f.encode_name == name), None)
            if field is None:
                return []
            t = field.type
            node = node.get(name) if isinstance(node, dict) else None
        elif isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
            t = t.item_type
            i = int(index) if index.isdigit() else -1
            node = node[i] if isinstance(node, list) and 0 <= i < len(node) else None
        elif isinstance(t, mi.DictType):
            t, node = t.value_type, None
        else:
            return []
    return _values(_strip(t))


def _strip(t: Any) -> Any:
    """The type under constraints (``Annotated``) and ``| None``."""
    while True:
        if isinstance(t, mi.Metadata):
            t = t.type
        elif isinstance(t, mi.UnionType):
            rest = [x for x in t.types if not isinstance(x, mi.NoneType)]
            if len(rest) != 1:
                return t
            t = rest[0]
        else:
            return t


def _member(members: list[Any], tagged: list[Any], node: Any) -> Any:
    """The union member the file chose: by its tag, else the only struct in it."""
    if tagged and isinstance(node, dict):
        tag = node.get(tagged[0].tag_field)
        return next((x for x in tagged if x.tag == tag), None)
    structs = [x for x in members if isinstance(x, mi.StructType)]
    return structs[0] if len(structs) == 1 else None


def _values(t: Any) -> list[str]:
    if isinstance(t, mi.EnumType):
        return [str(e.value) for e in t.cls]
    if isinstance(t, mi.LiteralType):
        return [str(v) for v in t.values]
    if isinstance(t, mi.UnionType):  # e.g. an enum or a literal, or None
        return [v for x in t.types for v in _values(_strip(x))]
    return []


def with_accepted(message: str, root: type, tree: Any, path: str) -> str:
    """``message`` plus ``(expected one of …)`` when it is about a value not
    among those the field at ``path`` accepts."""
    if not message.startswith(("Invalid enum value", "Invalid value")):
        return message
    values = accepted_values(root, tree, path)
    return f"{message} (expected one of {', '.join(values)})" if values else message
