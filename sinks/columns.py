"""A batch of log values → one Python list per column, in one generated loop.

A sink that lays records out by field (S3's Arrow columns) decodes a whole
batch at once: ``column_decoder(type, exprs)`` generates a function
``decode(values, header) -> [column, ...]`` whose loop decodes each Avro
value (the codec's generated field code, ``stage_codec._gen``, with its own
longs: ``_long``) into locals ``f_<attribute>`` and appends each expression
of ``exprs`` to its column.
Against one row decoder call per record it saves the call, a tuple per record
and the transposition of the rows into columns afterwards.

Only for values written with the topic's current schema: ``header`` is
``current_header`` (the codec's own condition for its fast path) and
``decode`` returns None as soon as a value carries another one. A malformed
value raises (IndexError, ValueError, UnicodeDecodeError, struct.error:
``COLUMN_ERRORS``); the caller then takes the per-record path, which names
the records at fault.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from msgspec import inspect as mi

from otgate.actors.log import avro
from otgate.actors.stage_codec import _DOUBLE, _FLOAT, _gen, _gen_long
from otgate.actors.validator.actor import DECODE_ERRORS

COLUMN_ERRORS = (*DECODE_ERRORS, struct.error)
_PAIRS = struct.Struct("<4H").unpack_from
# Two varint bytes that both carry the continuation bit (as a little-endian u16)
# -> their 14 value bits; -1 for any other pair, which makes the OR below negative.
_BITS14 = [(u & 0x7F) | ((u >> 8) & 0x7F) << 7 if u & 0x8080 == 0x8080 else -1
           for u in range(1 << 16)]
Decoder = Callable[[list[bytes], bytes], list[list[Any]] | None]
_DECODERS: dict[tuple[type, tuple[str, ...]], Decoder | None] = {}  # None: not handled


def column_decoder(tp: type, exprs: tuple[str, ...],
                   helpers: dict[str, Any] | None = None) -> Decoder:
    """``decode(values, header) -> columns``: one list per expression of ``exprs``
    (over ``f_<attribute>``, enums as their value strings, ``helpers`` in scope) for
    wire-format values of ``avro_schema(tp)`` that all start with ``header``, else
    None (flat records only: TypeError else)."""
    if (tp, exprs) in _DECODERS:
        dec = _DECODERS[(tp, exprs)]
        if dec is None:
            raise TypeError(f"no column decoder for {tp.__name__}")
        return dec
    schema = avro.avro_schema(tp)
    info = {f.encode_name: f for f in mi.type_info(tp).fields}  # type: ignore[union-attr]
    env: dict[str, Any] = {"_d": _DOUBLE.unpack_from, "_f": _FLOAT.unpack_from,
                           "_P": _PAIRS, "_B": _BITS14, "_L": {}, "_S": {}, **(helpers or {})}
    body: list[str] = []
    try:
        for f in schema["fields"]:
            body += _field(f["type"], f"f_{info[f['name']].name}", "        ", env)
    except TypeError:
        _DECODERS[(tp, exprs)] = None
        raise
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


def _field(t: Any, var: str, ind: str, env: dict[str, Any]) -> list[str]:
    """``stage_codec._gen``, with longs (also as union branches) by ``_long``."""
    if t in ("long", "int"):
        return _long(var, ind)
    if isinstance(t, list):
        out = _gen_long("u", ind)
        for i, branch in enumerate(t):
            out.append(f"{ind}{'if' if i == 0 else 'elif'} u == {i}:")
            out += _field(branch, var, ind + "    ", env)
        out.append(f"{ind}else: raise ValueError(f'union branch {{u}} out of range')")
        return out
    return _gen(t, var, ind, env, None)


def _long(var: str, ind: str) -> list[str]:
    """An Avro long: one byte, or two, or nine (a nanosecond time: its first eight
    bytes as four u16 pairs through ``_BITS14``, one C call and four lookups instead
    of a loop over nine bytes); any other length by the loop of ``_gen_long``."""
    return [
        f"{ind}x = b[pos]",
        f"{ind}if x < 0x80:",
        f"{ind}    pos += 1; {var} = (x >> 1) ^ -(x & 1)",
        f"{ind}elif (y := b[pos + 1]) < 0x80:",
        f"{ind}    pos += 2; x = (x & 0x7F) | (y << 7); {var} = (x >> 1) ^ -(x & 1)",
        f"{ind}elif len(b) - pos >= 9 and b[pos + 8] < 0x80 and (x := _P(b, pos)) and (",
        f"{ind}        y := _B[x[0]] | _B[x[1]] << 14 | _B[x[2]] << 28 | _B[x[3]] << 42",
        f"{ind}        | b[pos + 8] << 56) >= 0:",
        f"{ind}    pos += 9; {var} = (y >> 1) ^ -(y & 1)",
        f"{ind}else:",
        *_gen_long(var, ind + "    "),
    ]


def current_header(codec: Any, topic: str, value: bytes) -> bytes | None:
    """``value``'s 5-byte header when it names ``topic``'s current schema (the
    codec's fast-path condition; the codec must have ``row_decoder``), else None."""
    row_decoder = getattr(codec, "row_decoder", None)
    if row_decoder is None or row_decoder(topic, value, "None", {}) is None:
        return None
    return value[:5]

