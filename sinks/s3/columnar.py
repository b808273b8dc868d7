"""The S3 sink's columnar decode: a part's Avro record bodies straight to Arrow
arrays by a native reader, with no Python object per record.

The bodies (each value less its 5-byte wire header) are laid end to end as
the one block of an Avro object container file whose schema is the record
type's own (so only for values whose writer schema is exactly that one: the
codec's fast-path condition), and DataFusion's Avro reader (arrow-rs) reads
the file into columns. Each column then becomes the Parquet file's column(s)
as ``parquet.columns`` defines them, with Arrow compute: ``*_time`` longs as
UTC timestamps, enums as their symbol strings, a union of numbers and
strings as ``<name>`` (float64, bools as 0/1) and ``<name>_text``.

The container's header is fastavro's, the block's two counts are the log's
own Avro longs; decoding is the reader's. Anything
the reader refuses, a row count other than the part's, or a column that
does not convert gives None, and the sink takes the per-record path, which
also says which record is at fault. Without the ``datafusion`` package
``available()`` is False and that path is the only one.
"""

from __future__ import annotations

import importlib.util
import io
import os
import tempfile
from functools import cache
from typing import Any

import fastavro
import msgspec.inspect as mi
import pyarrow as pa
import pyarrow.compute as pc

from otgate.actors.log import avro
from otgate.actors.log.base import LogRecord
from otgate.sinks.s3.parquet import TIME_FIELDS, columns

SYNC = b"otgate-columnar!"  # any 16 bytes: the reader only checks it after the block
_SHM = "/dev/shm"
ARROW_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError, KeyError)


def available() -> bool:
    """True when the ``datafusion`` package is installed (without importing it: that
    takes seconds and ~50 MB, so a sink does it on first use, in a worker thread)."""
    return importlib.util.find_spec("datafusion") is not None


@cache
def _header(record_type: type) -> bytes:
    """Magic, metadata (schema, null codec) and sync marker, written by fastavro
    (a container of no records is just its header)."""
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(avro.avro_schema(record_type)), [],
                    codec="null", sync_marker=SYNC)
    return buf.getvalue()


def container(record_type: type, values: list[bytes]) -> list[Any] | None:
    """One Avro object container of ``values``' bodies, as pieces to write in turn;
    None unless every value carries the same wire header (one writer schema).

    The headers are checked and cut off in Arrow (a third of the cost of doing
    it per value in Python); the bodies stay in Arrow's buffer."""
    header = values[0][:5]
    arr = pa.array(values, pa.large_binary())
    if not pc.all(pc.equal(pc.binary_slice(arr, 0, 5), pa.scalar(header, pa.large_binary()))).as_py():
        return None
    bodies = pc.binary_slice(arr, 5, 1 << 30)  # (no value is 1 GiB)
    n = len(bodies)
    offsets = pa.Array.from_buffers(pa.int64(), n + 1, [None, bodies.buffers()[1]],
                                    offset=bodies.offset)
    start, end = offsets[0].as_py(), offsets[n].as_py()
    data = bodies.buffers()[2].slice(start, end - start)
    return [_header(record_type), avro.zigzag(n), avro.zigzag(end - start), data, SYNC]


class AvroColumns:
    """DataFusion's Avro reader for one sink. A part is read as one Arrow batch of at
    most ``max_rows`` rows (the sink's batch size): a larger part is refused, since
    the reader (DataFusion 55) misplaces a dense union's offsets in the batches after
    the first."""

    stuck = False  # set (for the process) once a read did not finish: see the S3 actor
    TIMEOUT_S, TIMEOUT_S_PER_ROW = 5.0, 200e-6  # ~0.5 µs per row when it works

    def __init__(self, max_rows: int) -> None:
        import datafusion

        cfg = (datafusion.SessionConfig().with_batch_size(max(max_rows, 8192))
               .with_target_partitions(1).with_repartition_file_scans(False))
        self.ctx = datafusion.SessionContext(cfg)
        self.max_rows = max(max_rows, 8192)
        self.dir = _SHM if os.access(_SHM, os.W_OK) else None

    def read_timeout(self, rows: int) -> float:
        return max(self.TIMEOUT_S, self.TIMEOUT_S_PER_ROW * rows)

    def read(self, pieces: list[Any]) -> pa.Table:
        fd, path = tempfile.mkstemp(suffix=".avro", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as f:
                for piece in pieces:
                    f.write(piece)
            return self.ctx.read_avro(path).to_arrow_table()
        finally:
            os.unlink(path)

    def table(self, topic: str, partition: int, recs: list[LogRecord],
              record_type: type) -> pa.Table | None:
        """``parquet.table`` of ``recs`` (one topic and log partition, all of
        ``record_type``'s current schema), or None (the per-record path then)."""
        if len(recs) > self.max_rows:
            return None
        data = container(record_type, [r.value for r in recs])
        if data is None:
            return None
        try:
            got = self.read(data)
        except Exception:  # the reader's errors carry no type of their own
            return None
        if got.num_rows != len(recs):
            return None
        schema = columns(record_type)[1]
        n = len(recs)
        arrays: list[Any] = [
            pa.repeat(pa.scalar(topic, pa.string()), n),
            pa.repeat(pa.scalar(partition, pa.int32()), n),
            pa.array([r.offset for r in recs], pa.int64()),
            pa.array([r.timestamp_ns for r in recs], pa.timestamp("ns", tz="UTC")),
        ]
        try:
            for f in mi.type_info(record_type).fields:
                cols = _field_arrays(f, got.column(f.name).combine_chunks())
                if cols is None:
                    return None
                arrays += cols
            return pa.Table.from_arrays(arrays, schema=schema)
        except ARROW_ERRORS:
            return None


def _field_arrays(f: mi.Field, arr: pa.Array) -> list[pa.Array] | None:
    """``parquet._field_columns`` of one field from the reader's column, or None."""
    t = f.type
    members = list(t.types) if isinstance(t, mi.UnionType) else [t]
    members = [m for m in members if not isinstance(m, mi.NoneType)]
    if len(members) == 1:
        m = members[0]
        if isinstance(m, mi.IntType):
            is_time = f.name.endswith("_time") or f.name in TIME_FIELDS
            return [arr.cast(pa.timestamp("ns", tz="UTC")) if is_time else arr.cast(pa.int64())]
        if isinstance(m, mi.FloatType):
            return [arr.cast(pa.float64())]
        if isinstance(m, (mi.BoolType, mi.StrType, mi.EnumType)):
            return [arr.cast(pa.bool_() if isinstance(m, mi.BoolType) else pa.string())]
        return None
    if not isinstance(arr, pa.UnionArray) or arr.type.mode != "dense":
        return None
    if not all(isinstance(m, (mi.FloatType, mi.IntType, mi.BoolType, mi.StrType))
               for m in members):
        return None
    return _split_union(arr, any(isinstance(m, mi.StrType) for m in members))


def _split_union(arr: pa.UnionArray, text: bool) -> list[pa.Array]:
    """A dense union of null, numbers and strings as float64 (bools as 0/1, strings
    null) and, with ``text``, string (the strings, all else null)."""
    codes = arr.type.type_codes
    nums, strs, base = [], [], [0]
    for i, field in enumerate(arr.type):
        child = arr.field(i)
        tp = field.type
        numeric = pa.types.is_integer(tp) or pa.types.is_floating(tp) or pa.types.is_boolean(tp)
        nums.append(child.cast(pa.float64()) if numeric else pa.nulls(len(child), pa.float64()))
        strs.append(child.cast(pa.string()) if pa.types.is_string(tp)
                    else pa.nulls(len(child), pa.string()))
        base.append(base[-1] + len(child))
    where = [0] * (max(codes) + 1)
    for i, code in enumerate(codes):
        where[code] = base[i]
    index = pc.add(pc.take(pa.array(where, pa.int32()), arr.type_codes), arr.offsets)
    out = [pc.take(pa.concat_arrays(nums), index)]
    if text:
        out.append(pc.take(pa.concat_arrays(strs), index))
    return out
