"""A batch of log values → one Python list per column, in one generated loop.

The sinks that lay records out by field (S3's Arrow columns, the HTTP sink's
JSON) decode a whole batch at once: ``column_decoder(type, exprs)`` generates a
function ``decode(values, header) -> [column, ...]`` whose loop decodes each Avro value
(the codec's generated field code, ``stage_codec._gen``) into locals
``f_<attribute>`` and appends each expression of ``exprs`` to its column.
Against one row decoder call per record it saves the call, a tuple per record
and the transposition of the rows into columns afterwards.

Only for values written with the topic's current schema: ``header`` is
``current_header`` (the codec's own condition for its fast path) and
``decode`` returns None as soon as a value carries another one. A malformed value raises (IndexError,
ValueError, UnicodeDecodeError, struct.error: ``COLUMN_ERRORS``); the caller
then takes the per-record path, which names the records at fault.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from msgspec import inspect as mi

from otgate.actors.log import avro
from otgate.actors.stage_codec import _DOUBLE, _FLOAT, _gen
from otgate.actors.validator.actor import DECODE_ERRORS

COLUMN_ERRORS = (*DECODE_ERRORS, struct.error)
Decoder = Callable[[list[bytes], bytes], list[list[Any]] | None]
_DECODERS: dict[tuple[type, tuple[str, ...]], Decoder] = {}


def column_decoder(tp: type, exprs: tuple[str, ...],
                   helpers: dict[str, Any] | None = None) -> Decoder:
    """``decode(values, header) -> columns``: one list per expression of ``exprs``
    (over ``f_<attribute>``, enums as their value strings, ``helpers`` in scope) for
    wire-format values of ``avro_schema(tp)`` that all start with ``header``, else
    None (flat records only: TypeError else)."""
    dec = _DECODERS.get((tp, exprs))
    if dec is not None:
        return dec
    schema = avro.avro_schema(tp)
    info = {f.encode_name: f for f in mi.type_info(tp).fields}  # type: ignore[union-attr]
    env: dict[str, Any] = {"_d": _DOUBLE.unpack_from, "_f": _FLOAT.unpack_from,
                           "_L": {}, "_S": {}, **(helpers or {})}
    body: list[str] = []
    for f in schema["fields"]:
        body += _gen(f["type"], f"f_{info[f['name']].name}", "        ", env, None)
    cols = [f"c{i}" for i in range(len(exprs))]
    bound = ", ".join(f"{k}={k}" for k in env)  # the tables as locals, not globals
    lines = [
        f"def decode(values, header, {bound}):",
        *[f"    {c} = []; a{c} = {c}.append" for c in cols],
        "    for b in values:",
        "        if b[:5] != header:",
        "            return None",
        "        pos = 5",
        *body,
        "        if pos != len(b):",
        "            raise ValueError(f'{len(b) - pos} trailing bytes')",
        *[f"        a{c}({e})" for c, e in zip(cols, exprs, strict=True)],
        f"    return [{', '.join(cols)}]",
    ]
    exec(compile("\n".join(lines), f"<avro columns {tp.__name__}>", "exec"), env)
    dec = _DECODERS[(tp, exprs)] = env["decode"]
    return dec


def field_names(tp: type) -> tuple[str, ...]:
    """``f_<attribute>`` of each field of ``tp``, in order: the raw values as columns."""
    return tuple(f"f_{f.name}" for f in mi.type_info(tp).fields)  # type: ignore[union-attr]


def current_header(codec: Any, topic: str, value: bytes) -> bytes | None:
    """``value``'s 5-byte header when it names ``topic``'s current schema (the
    codec's fast-path condition; the codec must have ``row_decoder``), else None."""
    row_decoder = getattr(codec, "row_decoder", None)
    if row_decoder is None or row_decoder(topic, value, "None", {}) is None:
        return None
    return value[:5]
