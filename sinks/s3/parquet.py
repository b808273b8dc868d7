"""Records of one topic → one Parquet file, with the schema derived from the record Struct.

Columns follow the Struct's fields (``msgspec.inspect``): ints, floats,
bools and strings as such; enums as their value string; integer fields that
hold record times (``*_time``, ``window_start``, ``window_end``: nanoseconds
since the epoch) as ``timestamp[ns, UTC]``; a field that may hold a number
or a string (``Reading.value``) as two columns, ``<name>`` (float64, bools
as 0/1) and ``<name>_text``; anything nested as JSON text. Four columns
say where each row came from: ``_topic``, ``_partition``, ``_offset``
(a reader drops a row it already has by these) and ``_log_time``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import cache
from typing import Any

import msgspec
import msgspec.inspect as mi
import pyarrow as pa
import pyarrow.parquet as pq

from otgate.actors.log.base import LogRecord

TIME_FIELDS = ("window_start", "window_end")
NUMERIC = (mi.FloatType, mi.IntType, mi.BoolType)
_json = msgspec.json.Encoder()

Column = tuple[str, pa.DataType, Callable[[Any], Any]]
ROW_HELPERS = {"_num": lambda v: float(v) if not isinstance(v, str) else None}
"""Names ``row_expression`` uses (a row decoder's helpers)."""
CONVERT_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError)


def _getter(name: str, convert: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    if convert is None:
        return lambda obj: getattr(obj, name)

    def get(obj: Any) -> Any:
        v = getattr(obj, name)
        return None if v is None else convert(v)
    return get


def _number(v: Any) -> Any:
    return float(v) if not isinstance(v, str) else None


def _text(v: Any) -> Any:
    return v if isinstance(v, str) else None


def _field_columns(f: mi.Field) -> list[Column]:
    t = f.type
    members = list(t.types) if isinstance(t, mi.UnionType) else [t]
    members = [m for m in members if not isinstance(m, mi.NoneType)]
    name = f.name
    if len(members) == 1:
        m = members[0]
        if isinstance(m, mi.IntType):
            is_time = name.endswith("_time") or name in TIME_FIELDS
            return [(name, pa.timestamp("ns", tz="UTC") if is_time else pa.int64(),
                     _getter(name, None))]
        if isinstance(m, mi.FloatType):
            return [(name, pa.float64(), _getter(name, float))]
        if isinstance(m, mi.BoolType):
            return [(name, pa.bool_(), _getter(name, None))]
        if isinstance(m, mi.StrType):
            return [(name, pa.string(), _getter(name, None))]
        if isinstance(m, mi.EnumType):
            return [(name, pa.string(), _getter(name, lambda v: v.value))]
    elif all(isinstance(m, (*NUMERIC, mi.StrType)) for m in members):
        cols: list[Column] = [(name, pa.float64(), _getter(name, _number))]
        if any(isinstance(m, mi.StrType) for m in members):
            cols.append((f"{name}_text", pa.string(), _getter(name, _text)))
        return cols
    return [(name, pa.string(), _getter(name, lambda v: _json.encode(v).decode()))]


def _field_expressions(f: mi.Field) -> list[str] | None:
    """``_field_columns`` as row-decoder expressions over ``f_<name>`` (enums come as
    their value strings); None for a field only the object path handles."""
    t = f.type
    members = list(t.types) if isinstance(t, mi.UnionType) else [t]
    members = [m for m in members if not isinstance(m, mi.NoneType)]
    v = f"f_{f.name}"
    if len(members) == 1:
        if isinstance(members[0], (mi.IntType, mi.BoolType, mi.StrType, mi.EnumType)):
            return [v]
        if isinstance(members[0], mi.FloatType):  # an Avro double decodes as a float
            return [v]
        return None
    if all(isinstance(m, (*NUMERIC, mi.StrType)) for m in members):
        out = [f"(None if {v} is None else _num({v}))"]
        if any(isinstance(m, mi.StrType) for m in members):
            out.append(f"({v} if type({v}) is str else None)")
        return out
    return None


@cache
def row_expression(record_type: type) -> str | None:
    """The data columns of one record as a row decoder's return expression (a tuple
    in ``columns`` order, straight from the Avro bytes; ``LogCodec.row_decoder`` with
    ``ROW_HELPERS``); None when some field needs the object path."""
    exprs: list[str] = []
    for f in mi.type_info(record_type).fields:
        e = _field_expressions(f)
        if e is None:
            return None
        exprs += e
    return f"({', '.join(exprs)},)"


def table_from_rows(topic: str, partition: int, recs: list[LogRecord], rows: list[tuple],
                    record_type: type) -> pa.Table:
    """``table`` of records of one topic and log partition whose data columns come
    as ``row_expression`` tuples.

    The tuples are converted as one struct array whose fields are the columns
    (one pass in Arrow's converter, no transposition in Python: ``zip(*rows)``
    over a file's rows cost twice as much, most of it the collector walking the
    transposed tuples)."""
    schema = columns(record_type)[1]
    n = len(recs)
    arrays = [
        pa.repeat(pa.scalar(topic, pa.string()), n),
        pa.repeat(pa.scalar(partition, pa.int32()), n),
        pa.array([r.offset for r in recs], pa.int64()),
        pa.array([r.timestamp_ns for r in recs], pa.timestamp("ns", tz="UTC")),
        *pa.array(rows, _row_type(record_type)).flatten(),
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


@cache
def _row_type(record_type: type) -> pa.StructType:
    """The data columns as the fields of one struct (a ``row_expression`` tuple's type)."""
    return pa.struct([(name, tp) for name, tp, _ in columns(record_type)[0]])


@cache
def columns(record_type: type) -> tuple[list[Column], pa.Schema]:
    """The data columns of a record type and the file schema (source columns first)."""
    cols = [c for f in mi.type_info(record_type).fields for c in _field_columns(f)]
    schema = pa.schema([
        ("_topic", pa.string()), ("_partition", pa.int32()), ("_offset", pa.int64()),
        ("_log_time", pa.timestamp("ns", tz="UTC")),
        *[(name, tp) for name, tp, _ in cols],
    ])
    return cols, schema


def table(items: list[tuple[LogRecord, Any]]) -> pa.Table:
    """The rows of ``items`` (all of one record type); raises on a value that does
    not fit its column (``CONVERT_ERRORS``)."""
    cols, schema = columns(type(items[0][1]))
    objs = [obj for _, obj in items]
    arrays = [
        pa.array([r.topic for r, _ in items], pa.string()),
        pa.array([r.partition for r, _ in items], pa.int32()),
        pa.array([r.offset for r, _ in items], pa.int64()),
        pa.array([r.timestamp_ns for r, _ in items], pa.timestamp("ns", tz="UTC")),
        *[pa.array([get(o) for o in objs], tp) for _, tp, get in cols],
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def write(rows: pa.Table, compression: str) -> bytes:
    """One Parquet file of ``rows``."""
    sink = io.BytesIO()
    pq.write_table(rows, sink, compression=None if compression == "none" else compression)
    return sink.getvalue()


def to_parquet(items: list[tuple[LogRecord, Any]], compression: str) -> bytes:
    """One Parquet file of ``items`` (see ``table``)."""
    return write(table(items), compression)
