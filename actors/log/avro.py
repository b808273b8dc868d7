"""Avro for the log: schemas derived from msgspec Structs, a compiled encoder,
and the Confluent wire format (BACKWARD-compatibility check: ``compat``).

The record Structs (``otgate.actors.records``) are the source of truth;
``avro_schema(Type)`` derives the Avro schema from them. Encoding is the hot
path of every device session, so ``compile_encoder(Type)`` generates a Python
function specialised to the Struct (strings and long prefixes cached) that is
~2x faster than ``fastavro.schemaless_writer`` on a ``to_builtins`` dict and
produces the same bytes (tests/test_records_avro.py checks that). Decoding
uses fastavro with writer and reader schemas, so a reader of v2 reads v1 data.

Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro body.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import Any

import fastavro
import msgspec
from msgspec import inspect as mi

MAGIC = 0
_HEADER = struct.Struct(">bI")
NAMESPACE = "otgate"


class WireFormatError(ValueError):
    """A log value is not in the Confluent wire format (bad magic or too short)."""


def wire_header(schema_id: int) -> bytes:
    """The 5-byte prefix (magic 0 + schema id) of every value on the log."""
    return _HEADER.pack(MAGIC, schema_id)


def split_wire(value: bytes) -> tuple[int, bytes]:
    """``(schema_id, avro_body)`` of a wire-format value."""
    if len(value) < 5 or value[0] != MAGIC:
        raise WireFormatError(f"not Confluent wire format (len={len(value)})")
    return _HEADER.unpack_from(value)[1], value[5:]


# -- schema derivation --------------------------------------------------------


def avro_schema(tp: type) -> dict[str, Any]:
    """The Avro record schema of a msgspec Struct type (nested types named once)."""
    return _schema(mi.type_info(tp), set())


def _schema(t: mi.Type, named: set[str]) -> Any:
    if isinstance(t, mi.StructType):
        name = t.cls.__name__
        if name in named:
            return f"{NAMESPACE}.{name}"
        named.add(name)
        fields = []
        for f in t.fields:
            fs: dict[str, Any] = {"name": f.encode_name, "type": _schema(f.type, named)}
            default = _default(f)
            if default is not _NO:
                fs["type"] = _default_first(fs["type"], default)
                fs["default"] = default
            doc = None
            if doc:
                fs["doc"] = doc
            fields.append(fs)
        out = {"type": "record", "name": name, "namespace": NAMESPACE, "fields": fields}
        if t.cls.__doc__:
            out["doc"] = t.cls.__doc__.strip().splitlines()[0]
        return out
    if isinstance(t, mi.EnumType):
        name = t.cls.__name__
        if name in named:
            return f"{NAMESPACE}.{name}"
        named.add(name)
        return {
            "type": "enum",
            "name": name,
            "namespace": NAMESPACE,
            "symbols": [m.value for m in t.cls],
        }
    if isinstance(t, mi.UnionType):
        branches = [_schema(x, named) for x in _ordered(t.types)]
        return branches
    if isinstance(t, mi.NoneType):
        return "null"
    if isinstance(t, mi.BoolType):
        return "boolean"
    if isinstance(t, mi.IntType):
        return "long"
    if isinstance(t, mi.FloatType):
        return "double"
    if isinstance(t, mi.StrType):
        return "string"
    if isinstance(t, mi.BytesType):
        return "bytes"
    if isinstance(t, mi.ListType | mi.TupleType | mi.VarTupleType):
        item = t.item_type if not isinstance(t, mi.TupleType) else t.item_types[0]
        return {"type": "array", "items": _schema(item, named)}
    if isinstance(t, mi.DictType):
        return {"type": "map", "values": _schema(t.value_type, named)}
    raise TypeError(f"no Avro mapping for {t!r}")


_ORDER = (mi.NoneType, mi.BoolType, mi.IntType, mi.FloatType, mi.StrType, mi.BytesType)


def _ordered(types: tuple[mi.Type, ...]) -> list[mi.Type]:
    # bool before long before double: a Python bool is an int and an int fits
    # a double, so the first matching branch must be the narrowest.
    def rank(x: mi.Type) -> int:
        for i, k in enumerate(_ORDER):
            if isinstance(x, k):
                return i
        return len(_ORDER)

    return sorted(types, key=rank)


class _NoDefault:
    pass


_NO = _NoDefault()


def _default(f: mi.Field) -> Any:
    if f.default is not msgspec.NODEFAULT:
        d = f.default
    elif f.default_factory is not msgspec.NODEFAULT:
        d = f.default_factory()
    else:
        return _NO
    return msgspec.to_builtins(d)


def _default_first(schema: Any, default: Any) -> Any:
    """Avro wants a union's default to match its first branch."""
    if not isinstance(schema, list):
        return schema
    want = {type(None): "null", bool: "boolean", int: "long", float: "double", str: "string"}
    name = want.get(type(default))
    if name in schema:
        return [name, *[b for b in schema if b != name]]
    return schema


# -- compiled encoder ---------------------------------------------------------

_BYTE = [bytes((i,)) for i in range(256)]
_TAILS: dict[int, bytes] = {}
_pack_double = struct.Struct("<d").pack


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# 14 low bits of a long, both bytes with the continuation bit (n >= 2**14) ...
_LOW14 = [bytes(((i & 0x7F) | 0x80, ((i >> 7) & 0x7F) | 0x80)) for i in range(1 << 14)]
# ... and the whole encoding of 0x80 <= n < 2**14.
_SMALL14 = [bytes(((i & 0x7F) | 0x80, i >> 7)) if i >= 0x80 else b"" for i in range(1 << 14)]


def zigzag(n: int) -> bytes:
    """Avro ``long``: zigzag + varint.

    Values from 2**14 up are the encoding of their low 14 bits (a table)
    followed by a cached encoding of the rest, which repeats within a batch
    (timestamps of one poll, nearby sequence numbers)."""
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return _BYTE[n]
    if n < 0x4000:
        return _SMALL14[n]
    return _LOW14[n & 0x3FFF] + (_TAILS.get(n >> 14) or _tail(n >> 14))


def _tail(high: int) -> bytes:
    """Varint of a long's bits above the low 14, cached (bounded)."""
    if len(_TAILS) > 8192:
        _TAILS.clear()
    b = _TAILS[high] = _varint(high)
    return b


class _StrCache(dict):
    """Encoded Avro strings by value; bounded (cleared when large)."""

    def __missing__(self, s: str) -> bytes:
        if len(self) > 65536:
            self.clear()
        e = s.encode()
        b = self[s] = zigzag(len(e)) + e
        return b


class _RunCache(dict):
    """Encoding of a run of consecutive string/enum fields, keyed by their values
    (asset_id + parameter, unit + quality + classification...). Bounded."""

    def __init__(self, encoders: list[Callable[[Any], bytes]]) -> None:
        super().__init__()
        self.encoders = encoders

    def __missing__(self, key: tuple) -> bytes:
        if len(self) > 65536:
            self.clear()
        b = self[key] = b"".join(e(x) for e, x in zip(self.encoders, key, strict=True))
        return b


class _Gen:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.env: dict[str, Any] = {
            "zz": zigzag,
            "SM": _SMALL14,
            "LO": _LOW14,
            "TL": _TAILS,
            "tail": _tail,
            "S": _StrCache(),
            "pd": _pack_double,
            "B": _BYTE,
            "EncodeError": EncodeError,
        }
        self.n = 0

    def var(self, prefix: str = "v") -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def emit(self, t: mi.Type, expr: str, ind: str) -> None:
        L = self.lines.append
        if isinstance(t, mi.StructType):
            v = self.var()
            L(f"{ind}{v} = {expr}")
            run: list[mi.Field] = []
            for f in [*t.fields, None]:
                if f is not None and isinstance(f.type, mi.StrType | mi.EnumType):
                    run.append(f)
                    continue
                if len(run) == 1:
                    self.emit(run[0].type, f"{v}.{run[0].name}", ind)
                elif run:  # consecutive strings/enums: one cached lookup for the run
                    cache = self.var("R")
                    self.env[cache] = _RunCache([self._scalar(x.type) for x in run])
                    key = ", ".join(f"{v}.{x.name}" for x in run)
                    L(f"{ind}a({cache}[({key})])")
                run = []
                if f is not None:
                    self.emit(f.type, f"{v}.{f.name}", ind)
        elif isinstance(t, mi.EnumType):
            tbl = self.var("E")
            self.env[tbl] = {
                **{m: zigzag(i) for i, m in enumerate(t.cls)},
                **{m.value: zigzag(i) for i, m in enumerate(t.cls)},
            }
            L(f"{ind}a({tbl}[{expr}])")
        elif isinstance(t, mi.NoneType):
            pass
        elif isinstance(t, mi.BoolType):
            L(f"{ind}a(B[1] if {expr} else B[0])")
        elif isinstance(t, mi.IntType):  # zigzag() inlined: longs are most of the work
            n = self.var("n")
            L(f"{ind}{n} = {expr}")
            L(f"{ind}{n} = ({n} << 1) ^ ({n} >> 63)")
            L(f"{ind}if {n} < 0x4000:")
            L(f"{ind}    a(SM[{n}] if {n} >= 0x80 else B[{n}])")
            L(f"{ind}else:")
            L(f"{ind}    a(LO[{n} & 0x3FFF]); a(TL.get({n} >> 14) or tail({n} >> 14))")
        elif isinstance(t, mi.FloatType):
            L(f"{ind}a(pd({expr}))")
        elif isinstance(t, mi.StrType):
            L(f"{ind}a(S[{expr}])")
        elif isinstance(t, mi.BytesType):
            v = self.var()
            L(f"{ind}{v} = {expr}")
            L(f"{ind}a(zz(len({v}))); a({v})")
        elif isinstance(t, mi.ListType | mi.VarTupleType):
            v, it = self.var(), self.var("i")
            L(f"{ind}{v} = {expr}")
            L(f"{ind}if {v}:")
            L(f"{ind}    a(zz(len({v})))")
            L(f"{ind}    for {it} in {v}:")
            self.emit(t.item_type, it, ind + "        ")
            L(f"{ind}a(B[0])")
        elif isinstance(t, mi.DictType):
            v, k, it = self.var(), self.var("k"), self.var("i")
            L(f"{ind}{v} = {expr}")
            L(f"{ind}if {v}:")
            L(f"{ind}    a(zz(len({v})))")
            L(f"{ind}    for {k}, {it} in {v}.items():")
            L(f"{ind}        a(S[{k}])")
            self.emit(t.value_type, it, ind + "        ")
            L(f"{ind}a(B[0])")
        elif isinstance(t, mi.UnionType):
            v = self.var()
            L(f"{ind}{v} = {expr}")
            kw = "if"
            for i, b in enumerate(_ordered(t.types)):
                L(f"{ind}{kw} {self._test(b, v)}:")
                L(f"{ind}    a(B[{zigzag(i)[0]}])")
                self.emit(b, v, ind + "    ")
                kw = "elif"
            L(f"{ind}else:")
            L(f"{ind}    raise EncodeError(f'{{type({v}).__name__}} fits no branch of {expr}')")
        else:
            raise TypeError(f"no Avro mapping for {t!r}")

    def _scalar(self, t: mi.Type) -> Callable[[Any], bytes]:
        if isinstance(t, mi.StrType):
            return self.env["S"].__getitem__
        table = {
            **{m: zigzag(i) for i, m in enumerate(t.cls)},
            **{m.value: zigzag(i) for i, m in enumerate(t.cls)},
        }
        return table.__getitem__

    def _test(self, t: mi.Type, v: str) -> str:
        if isinstance(t, mi.NoneType):
            return f"{v} is None"
        if isinstance(t, mi.BoolType):
            return f"({v} is True or {v} is False)"
        if isinstance(t, mi.IntType):
            return f"(type({v}) is int)"
        if isinstance(t, mi.FloatType):
            return f"(type({v}) is float)"
        if isinstance(t, mi.StrType):
            return f"(type({v}) is str)"
        if isinstance(t, mi.BytesType):
            return f"(type({v}) is bytes)"
        if isinstance(t, mi.StructType | mi.EnumType):
            name = self.var("C")
            self.env[name] = t.cls
            return f"isinstance({v}, {name})"
        if isinstance(t, mi.ListType | mi.VarTupleType):
            return f"isinstance({v}, (list, tuple))"
        if isinstance(t, mi.DictType):
            return f"isinstance({v}, dict)"
        raise TypeError(f"no Avro union test for {t!r}")


class EncodeError(ValueError):
    """A value does not fit its Avro schema (e.g. a value type no union branch takes)."""


def compile_encoder(tp: type) -> Callable[[Any, bytes], bytes]:
    """``encode(obj, header) -> header + avro(obj)`` specialised to Struct ``tp``.

    Not thread-safe only in the harmless sense that two threads may both fill
    the string cache; the output is always correct.
    """
    g = _Gen()
    g.lines += ["def encode(obj, header):", "    parts = [header]", "    a = parts.append"]
    g.emit(mi.type_info(tp), "obj", "    ")
    g.lines.append("    return b''.join(parts)")
    src = "\n".join(g.lines)
    exec(compile(src, f"<avro encoder {tp.__name__}>", "exec"), g.env)
    return g.env["encode"]


# -- decoding -----------------------------------------------------------------


def parse(schema: dict[str, Any] | str) -> Any:
    """A fastavro-parsed schema (accepts the JSON text a registry returns)."""
    if isinstance(schema, str):
        schema = msgspec.json.decode(schema)
    return fastavro.parse_schema(schema, named_schemas={})


def decode_body(body: bytes, writer: Any, reader: Any | None = None) -> Any:
    """Decode an Avro body written with ``writer``, resolved to ``reader``."""
    return fastavro.schemaless_reader(io.BytesIO(body), writer, reader)


def canonical(schema: dict[str, Any] | str) -> str:
    """Stable JSON text of a schema (sorted keys, no whitespace): the registry
    subject's identity for caching."""
    if isinstance(schema, str):
        schema = msgspec.json.decode(schema)
    return msgspec.json.encode(schema, order="sorted").decode()


def to_struct(data: Any, tp: type) -> Any:
    """A decoded Avro dict converted to its Struct type (enums from symbols)."""
    return msgspec.convert(data, tp)
