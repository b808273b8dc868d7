"""BACKWARD compatibility of Avro schemas: can a reader of the new schema read
data written with the old one? Covers records, unions, enums, arrays, maps,
named-type names and primitive promotion: the subset the record Structs use.
A Confluent registry enforces this itself; the check is here so a gateway can
refuse an incompatible record change before it writes anything.
"""

from __future__ import annotations

from typing import Any

import msgspec

from otgate.actors.log.avro import NAMESPACE

_PROMOTE = {
    "int": {"int"},
    "long": {"int", "long"},
    "float": {"int", "long", "float"},
    "double": {"int", "long", "float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


def backward_problems(reader: Any, writer: Any) -> list[str]:
    """Why a reader of ``reader`` cannot read data written with ``writer``
    (empty list = BACKWARD compatible). Covers records, unions, enums, arrays,
    maps and primitive promotion: the subset the record Structs use."""
    return _compat(_as_obj(reader), _as_obj(writer), "", {}, {})


def _as_obj(s: Any) -> Any:
    return msgspec.json.decode(s) if isinstance(s, str) and s.lstrip().startswith("{") else s


def _name(s: Any) -> str | None:
    if isinstance(s, dict):
        n = s.get("name")
        if n and "." not in n:
            n = f"{s.get('namespace', NAMESPACE)}.{n}"
        return n if s.get("type") in ("record", "enum", "fixed") else s.get("type")
    if isinstance(s, str):
        return s
    return None


def _compat(r: Any, w: Any, path: str, rn: dict, wn: dict) -> list[str]:
    if isinstance(r, dict) and r.get("type") in ("record", "enum"):
        rn[_name(r)] = r
    if isinstance(w, dict) and w.get("type") in ("record", "enum"):
        wn[_name(w)] = w
    if isinstance(r, str) and r in rn:
        r = rn[r]
    if isinstance(w, str) and w in wn:
        w = wn[w]
    if isinstance(w, list):
        probs = []
        for b in w:
            probs += _compat(r, b, path, rn, wn)
        return probs
    if isinstance(r, list):
        for b in r:
            if not _compat(b, w, path, dict(rn), dict(wn)):
                return []
        return [f"{path or '<root>'}: writer type {_name(w)} fits no reader union branch"]
    rt = r["type"] if isinstance(r, dict) else r
    wt = w["type"] if isinstance(w, dict) else w
    if rt in ("record", "enum") and rt == wt and _name(r) != _name(w):
        if _name(w) not in {f"{r.get('namespace', NAMESPACE)}.{a}" for a in r.get("aliases", ())}:
            return [f"{path or '<root>'}: {rt} name {_name(w)} is not {_name(r)}"]
    if rt == "record" and wt == "record":
        probs = []
        wf = {f["name"]: f for f in w["fields"]}
        for f in r["fields"]:
            p = f"{path}.{f['name']}" if path else f["name"]
            if f["name"] in wf:
                probs += _compat(f["type"], wf[f["name"]]["type"], p, rn, wn)
            elif "default" not in f:
                probs.append(f"{p}: new field without a default")
        return probs
    if rt == "enum" and wt == "enum":
        missing = set(w["symbols"]) - set(r["symbols"])
        if missing and "default" not in r:
            return [f"{path}: enum symbols removed: {sorted(missing)}"]
        return []
    if rt == "array" and wt == "array":
        return _compat(r["items"], w["items"], f"{path}[]", rn, wn)
    if rt == "map" and wt == "map":
        return _compat(r["values"], w["values"], f"{path}{{}}", rn, wn)
    if rt == wt or wt in _PROMOTE.get(rt, ()):
        return []
    return [f"{path or '<root>'}: writer {wt} is not readable as {rt}"]
