"""A compiled Avro decoder for the flat record schemas the stages read (``compile_decoder``).

Decoding is the costliest step of every stage; fastavro with schema
resolution takes ~10 µs per Reading here. For a value whose writer schema is
exactly the reader's (``LogCodec`` checks that), ``compile_decoder`` generates
a Python function for the record schema that builds the Struct directly.

What repeats is looked up, not decoded (all caches bounded, cleared when
large):

* a run of consecutive string and enum fields (asset_id + parameter, unit +
  quality + classification, adapter_id + adapter_version) by its bytes: one
  slice and one dict lookup for the run. Its end is guessed from one-byte
  lengths; a wrong guess (a longer string) only misses the cache, since a hit
  means the bytes at ``pos`` start with a run the full decoder read exactly
  before (a prefix-free encoding decodes the same way again). A miss decodes
  field by field and remembers the run.
* a 9-byte long (a nanosecond timestamp: the readings of one poll share it);
* a string by its bytes (one str object per value, whose hash is then
  computed once for every dict lookup downstream).

A union's branch is dispatched on its raw index byte, the likeliest branch
(double, then long) first.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from msgspec import inspect as mi

from otgate.actors.log import avro

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_DECODERS: dict[tuple[type, str | None], Callable[[bytes, int], Any]] = {}
RUN_BYTES = 256
"""Runs longer than this are decoded field by field and not remembered."""
CACHE_SIZE = 65536
"""Entries per cache before it is cleared."""


def compile_decoder(
    tp: type, returns: str | None = None, helpers: dict[str, Any] | None = None
) -> Callable[[bytes, int], Any]:
    """A decoder ``(value, pos) -> tp`` for ``avro_schema(tp)`` (flat records only).

    ``returns``: instead of the Struct, return this Python expression over the
    fields, named ``f_<attribute>`` (enums as their string values), with
    ``helpers`` in scope: a sink builds its table row straight from the bytes.
    Raises TypeError for schemas it does not handle (nested records, arrays,
    maps). The decoder raises IndexError / ValueError / UnicodeDecodeError /
    struct.error on malformed input, and ValueError on trailing bytes.
    """
    dec = _DECODERS.get((tp, returns))
    if dec is not None:
        return dec
    schema = avro.avro_schema(tp)
    info = {f.encode_name: f for f in mi.type_info(tp).fields}  # type: ignore[union-attr]
    env: dict[str, Any] = {
        "_d": _DOUBLE.unpack_from, "_f": _FLOAT.unpack_from,
        "_T": tp, "_L": {}, "_S": {}, **(helpers or {}),
    }
    lines = ["def decode(b, pos=5):"]
    args = []
    fields = [(f["type"], f"f_{info[f['name']].name}",
               None if returns is not None else _enum_class(info[f["name"]].type))
              for f in schema["fields"]]
    i = 0
    while i < len(fields):
        j = i
        while j < len(fields) and _label(fields[j][0]):
            j += 1
        if j - i >= 2:
            lines += _gen_run(fields[i:j], "    ", env, last=j == len(fields))
        else:
            j = i + 1
            lines += _gen(*fields[i][:2], "    ", env, fields[i][2])
        i = j
    args = [f"{info[f['name']].name}=f_{info[f['name']].name}" for f in schema["fields"]]
    lines.append("    if pos != len(b):")
    lines.append("        raise ValueError(f'{len(b) - pos} trailing bytes')")
    lines.append(f"    return {returns}" if returns is not None else
                 f"    return _T({', '.join(args)})")
    exec(compile("\n".join(lines), f"<avro decoder {tp.__name__}>", "exec"), env)
    dec = _DECODERS[(tp, returns)] = env["decode"]
    return dec


def _label(t: Any) -> bool:
    """A string or enum field: its values repeat (names, units, states)."""
    return t == "string" or (isinstance(t, dict) and t.get("type") == "enum")


def _gen_run(run: list[tuple[Any, str, type | None]], ind: str, env: dict[str, Any],
             last: bool) -> list[str]:
    """Consecutive string/enum fields looked up by their bytes (see module doc).
    ``last``: the run ends the record, so its bytes are the rest of the value."""
    cache = f"_R{len(env)}"
    env[cache] = {}
    names = ", ".join(v for _, v, _ in run)
    out = []
    if last:
        out.append(f"{ind}k = b[pos:]")
    else:
        out.append(f"{ind}e = pos")
        out.append(f"{ind}try:")
        for t, _, _ in run:
            out.append(f"{ind}    e += 1 + (b[e] >> 1)" if t == "string" else f"{ind}    e += 1")
        out.append(f"{ind}except IndexError:")
        out.append(f"{ind}    pass")
        out.append(f"{ind}k = b[pos:e]")
    out += [
        f"{ind}t = {cache}.get(k)",
        f"{ind}if t is not None:",
        f"{ind}    {names}, = t; pos += len(k)",
        f"{ind}else:",
        f"{ind}    r0 = pos",
    ]
    for t, var, enum_cls in run:
        out += _gen(t, var, ind + "    ", env, enum_cls)
    stored = "pos == len(b) and " if last else ""
    out += [
        f"{ind}    if {stored}pos - r0 <= {RUN_BYTES}:",
        f"{ind}        if len({cache}) > {CACHE_SIZE}: {cache}.clear()",
        f"{ind}        {cache}[b[r0:pos]] = ({names},)",
    ]
    return out


def _enum_class(t: mi.Type) -> type | None:
    if isinstance(t, mi.EnumType):
        return t.cls
    if isinstance(t, mi.UnionType):
        for x in t.types:
            if isinstance(x, mi.EnumType):
                return x.cls
    return None


def _gen_long(var: str, ind: str, cached: bool = False) -> list[str]:
    # inline: a one-byte varint is the common case; longer ones loop here rather
    # than in a function, which saves a call per field. ``cached`` (long fields):
    # a 9-byte varint (a nanosecond timestamp) is first looked up by its bytes, since
    # the readings of one poll share their times; only exact 9-byte varints are stored.
    out = [
        f"{ind}x = b[pos]",
        f"{ind}if x < 0x80:",
        f"{ind}    pos += 1; {var} = (x >> 1) ^ -(x & 1)",
    ]
    body = [
        f"{ind}    p0 = pos; pos += 1; acc = x & 0x7F; shift = 7",
        f"{ind}    while True:",
        f"{ind}        x = b[pos]; pos += 1",
        f"{ind}        acc |= (x & 0x7F) << shift",
        f"{ind}        if x < 0x80: break",
        f"{ind}        shift += 7",
        f"{ind}    {var} = (acc >> 1) ^ -(acc & 1)",
    ]
    if not cached:
        return [*out, f"{ind}else:", *body]
    # two and three bytes (sequence numbers, counts) inline, before the timestamp lookup
    return [
        *out,
        f"{ind}elif (y := b[pos + 1]) < 0x80:",
        f"{ind}    pos += 2; acc = (x & 0x7F) | (y << 7); {var} = (acc >> 1) ^ -(acc & 1)",
        f"{ind}elif (z := b[pos + 2]) < 0x80:",
        f"{ind}    pos += 3; acc = (x & 0x7F) | ((y & 0x7F) << 7) | (z << 14)",
        f"{ind}    {var} = (acc >> 1) ^ -(acc & 1)",
        f"{ind}elif (k := b[pos:pos + 9]) in _L:",
        f"{ind}    {var} = _L[k]; pos += 9",
        f"{ind}else:",
        *body,
        f"{ind}    if pos - p0 == 9:",
        f"{ind}        if len(_L) > 4096: _L.clear()",
        f"{ind}        _L[k] = {var}",
    ]


_LIKELY = ("double", "long", "string", "null")
"""Union branches tested first, in this order (telemetry values, then times)."""


def _gen_union(t: list[Any], var: str, ind: str, env: dict[str, Any],
               enum_cls: type | None) -> list[str]:
    """Branch index first: one byte (zigzag 2i) for the < 64 branches of any schema
    here; a longer varint (legal, never written) takes the general path."""
    order = sorted(range(len(t)), key=lambda i: (
        _LIKELY.index(t[i]) if isinstance(t[i], str) and t[i] in _LIKELY else len(_LIKELY)))
    out = [f"{ind}x = b[pos]; pos += 1"]
    for n, i in enumerate(order):
        out.append(f"{ind}{'if' if n == 0 else 'elif'} x == {2 * i}:")
        out += _gen(t[i], var, ind + "    ", env, enum_cls)
    out.append(f"{ind}else:")
    out.append(f"{ind}    pos -= 1")
    out += _gen_long("u", ind + "    ")
    for n, i in enumerate(range(len(t))):
        out.append(f"{ind}    {'if' if n == 0 else 'elif'} u == {i}:")
        out += _gen(t[i], var, ind + "        ", env, enum_cls)
    out.append(f"{ind}    else: raise ValueError(f'union branch {{u}} out of range')")
    return out


def _gen(t: Any, var: str, ind: str, env: dict[str, Any], enum_cls: type | None) -> list[str]:
    if isinstance(t, list):
        return _gen_union(t, var, ind, env, enum_cls)
    if isinstance(t, dict):
        if t.get("type") != "enum":
            raise TypeError(f"no fast decoder for {t.get('type')}")
        name = f"_E{len(env)}"
        env[name] = [enum_cls(s) for s in t["symbols"]] if enum_cls else list(t["symbols"])
        return [*_gen_long("n", ind), f"{ind}{var} = {name}[n]"]
    if t == "null":
        return [f"{ind}{var} = None"]
    if t == "boolean":
        return [f"{ind}{var} = b[pos] == 1; pos += 1"]
    if t in ("long", "int"):
        return _gen_long(var, ind, cached=True)
    if t == "double":
        return [f"{ind}{var} = _d(b, pos)[0]; pos += 8"]
    if t == "float":
        return [f"{ind}{var} = _f(b, pos)[0]; pos += 4"]
    if t == "bytes":
        return [
            *_gen_long("n", ind),
            f"{ind}if n < 0: raise ValueError('negative length')",
            f"{ind}{var} = b[pos:pos + n]; pos += n",
            f"{ind}if pos > len(b): raise ValueError('truncated')",
        ]
    if t == "string":
        return [
            *_gen_long("n", ind),
            f"{ind}if n < 0: raise ValueError('negative length')",
            f"{ind}k = b[pos:pos + n]; pos += n",
            f"{ind}if pos > len(b): raise ValueError('truncated')",
            f"{ind}{var} = _S.get(k)",
            f"{ind}if {var} is None:",
            f"{ind}    {var} = k.decode()",
            f"{ind}    if n <= 64:",
            f"{ind}        if len(_S) > {CACHE_SIZE}: _S.clear()",
            f"{ind}        _S[k] = {var}",
        ]
    raise TypeError(f"no fast decoder for {t!r}")
