"""Type conversion: raw registers / bits of one read → point values.

A read's registers are kept as the bytes they were on the wire (big-endian
per register, ``registers_to_bytes``); each point gets a precompiled decoder
``f(payload) -> value | None`` for its slice. ``None`` means the bytes do not
make a valid value (NaN, infinity, undecodable string): the point is BAD.

Byte/word order: ``byte_order`` is the order of the two bytes inside each
register, ``word_order`` the order of the registers inside a 32/64-bit value.
The four usual layouts for the 32-bit value 0xAABBCCDD are
ABCD (big/big), CDAB (big bytes/little words), BADC (little/big) and
DCBA (little/little). A layout needs its words reversed exactly when one of
the two orders is little; the struct endianness is the byte order.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

from otgate.protocols.modbus.config import DataType, Order, Point

Decoder = Callable[[Any], Any]

_FMT = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
    DataType.BOOL: "H",
    DataType.BIT: "H",
}
_STRUCTS: dict[str, struct.Struct] = {}


def registers_to_bytes(registers: Sequence[int]) -> bytes:
    """The registers as they were on the wire (each one big-endian)."""
    return struct.pack(f">{len(registers)}H", *registers)


def _struct(fmt: str) -> struct.Struct:
    s = _STRUCTS.get(fmt)
    if s is None:
        s = _STRUCTS[fmt] = struct.Struct(fmt)
    return s


def _reverse_words(b: bytes) -> bytes:
    return b"".join(b[i : i + 2] for i in range(len(b) - 2, -1, -2))


def bit_decoder(index: int) -> Decoder:
    """Decoder for a coil / discrete input at ``index`` in the read's bits."""
    return lambda bits: bool(bits[index])


def register_decoder(point: Point, index: int) -> Decoder:
    """Decoder for ``point`` whose first register is ``index`` in the read."""
    off = 2 * index
    n = 2 * point.width
    t = point.type
    little_bytes = point.byte_order is Order.LITTLE
    if t is DataType.STRING:
        return _string_decoder(off, n, little_bytes, point.word_order is Order.LITTLE)
    endian = "<" if little_bytes else ">"
    unpack_from = _struct(endian + _FMT[t]).unpack_from
    if t is DataType.BOOL:
        return lambda b: unpack_from(b, off)[0] != 0
    if t is DataType.BIT:
        mask = 1 << (point.bit or 0)
        return lambda b: (unpack_from(b, off)[0] & mask) != 0
    reverse = point.width > 1 and ((point.word_order is Order.LITTLE) != little_bytes)
    if reverse:
        unpack = _struct(endian + _FMT[t]).unpack

        def raw(b: bytes) -> Any:
            return unpack(_reverse_words(b[off : off + n]))[0]
    else:

        def raw(b: bytes) -> Any:
            return unpack_from(b, off)[0]

    is_float = t in (DataType.FLOAT32, DataType.FLOAT64)
    scale, offset = point.scale, point.offset
    scaled = scale != 1.0 or offset != 0.0
    isfinite = math.isfinite
    if is_float:
        if scaled:
            def dec(b: bytes) -> Any:
                v = raw(b)
                return v * scale + offset if isfinite(v) else None
        else:
            def dec(b: bytes) -> Any:
                v = raw(b)
                return v if isfinite(v) else None
        return dec
    if scaled:
        return lambda b: raw(b) * scale + offset
    if not reverse:
        return lambda b: unpack_from(b, off)[0]
    return raw


def _string_decoder(off: int, n: int, little_bytes: bool, little_words: bool) -> Decoder:
    def dec(b: bytes) -> str | None:
        s = b[off : off + n]
        if little_words:
            s = _reverse_words(s)
        if little_bytes:
            s = bytes(s[i ^ 1] for i in range(len(s)))
        try:
            return s.decode("ascii").rstrip("\x00 ")
        except UnicodeDecodeError:
            return None

    return dec


def encode_value(point: Point, value: Any) -> list[int]:
    """Registers holding ``value`` for ``point`` (the inverse of its decoder).

    Used by writes (after ``check_writable``), the simulators and tests.
    Scale/offset are inverted (``raw = (value - offset) / scale``, rounded for
    integer types). Coils and ``bit`` points are not register-encoded here.
    Raises ``struct.error`` / ``OverflowError`` for a value the type cannot hold.
    """
    t = point.type
    little_bytes = point.byte_order is Order.LITTLE
    if t is DataType.STRING:
        raw = str(value).encode("ascii")[: 2 * point.width].ljust(2 * point.width, b"\x00")
        if little_bytes:
            raw = bytes(raw[i ^ 1] for i in range(len(raw)))
        if point.word_order is Order.LITTLE:
            raw = _reverse_words(raw)
        return list(struct.unpack(f">{point.width}H", raw))
    endian = "<" if little_bytes else ">"
    if t is DataType.BOOL:
        return list(struct.unpack(">H", struct.pack(endian + "H", 1 if value else 0)))
    if t is DataType.BIT:
        raise ValueError("bit points are not register-encoded (mask write)")
    x = (value - point.offset) / point.scale if (point.scale, point.offset) != (1.0, 0.0) else value
    if t not in (DataType.FLOAT32, DataType.FLOAT64):
        x = round(x)
    raw = struct.pack(endian + _FMT[t], x)
    if point.width > 1 and ((point.word_order is Order.LITTLE) != little_bytes):
        raw = _reverse_words(raw)
    return list(struct.unpack(f">{point.width}H", raw))


def check_writable(point: Point, value: Any) -> str | None:
    """Why ``value`` cannot be written to ``point`` as its type (None when it can).

    Integer registers take only values they hold exactly after scaling
    (``12.34`` on an int16 with scale 0.1 is refused, not rounded); booleans
    (coils, ``bool`` and ``bit`` points) take true/false or 0/1; strings take
    ASCII up to the point's length.
    """
    t = point.type
    if point.table.is_bits or t in (DataType.BOOL, DataType.BIT):
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return None
        return f"value {value!r}: {t.value} points take true/false or 0/1"
    if t is DataType.STRING:
        if not isinstance(value, str):
            return f"value {value!r}: a string point takes a string"
        if not value.isascii():
            return f"value {value!r}: only ASCII text fits in registers"
        if len(value) > 2 * point.width:
            return f"value {value!r}: longer than {2 * point.width} characters"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"value {value!r}: a {t.value} point takes a number"
    raw = (value - point.offset) / point.scale
    if t not in (DataType.FLOAT32, DataType.FLOAT64) and abs(raw - round(raw)) > 1e-6 * max(
        1.0, abs(raw)
    ):
        return f"value {value!r}: not a whole step of {point.scale:g} for {t.value}"
    try:
        encode_value(point, value)
    except (struct.error, OverflowError):
        return f"value {value!r}: out of range for {t.value}"
    return None


Unpacker = Callable[[Any], Sequence[Any]]


def _post(point: Point) -> Callable[[Any], Any] | None:
    """Work left after a batch unpack for one point (None = the raw value is it)."""
    t = point.type
    if t is DataType.BOOL:
        return lambda raw: raw != 0
    if t is DataType.BIT:
        mask = 1 << (point.bit or 0)
        return lambda raw: (raw & mask) != 0
    if t is DataType.STRING:
        little = point.byte_order is Order.LITTLE

        def text(raw: bytes) -> str | None:
            if little:
                raw = bytes(raw[i ^ 1] for i in range(len(raw)))
            try:
                return raw.decode("ascii").rstrip("\x00 ")
            except UnicodeDecodeError:
                return None

        return text
    scale, offset = point.scale, point.offset
    if scale != 1.0 or offset != 0.0:
        return lambda raw: raw * scale + offset
    return None


def _batchable(p: Point) -> bool:
    if p.type is DataType.STRING:
        return p.word_order is Order.BIG
    # a value whose words must be reversed cannot be one struct field
    return p.width == 1 or (p.word_order is Order.LITTLE) == (p.byte_order is Order.LITTLE)


def request_unpacker(points: list[Point], start: int, is_bits: bool) -> tuple[Unpacker, list]:
    """One call that turns a read's payload into the raw values of ``points``.

    Returns ``(unpack, posts)``: ``unpack(payload)`` gives one value per
    point, in order; ``posts[i]`` is the per-point finishing step or None.
    The fast path is a single ``struct.unpack`` over the whole read (pad bytes
    for gaps), used when the points do not overlap, share one byte order and
    need no word reversal (the common case). Otherwise each point's own
    decoder runs (``posts`` all None). Float NaN/inf checks are left to the
    caller (a NaN is BAD).
    """
    if is_bits:
        idx = [p.address - start for p in points]
        return (lambda bits: [bits[i] for i in idx]), [None] * len(points)
    order = {p.byte_order for p in points if p.type is not DataType.STRING}
    fast = len(order) <= 1 and all(_batchable(p) for p in points)
    pos = start
    fmt = ["<" if order == {Order.LITTLE} else ">"]
    if fast:
        for p in points:
            if p.address < pos:
                fast = False  # overlapping points: decode one by one
                break
            if p.address > pos:
                fmt.append(f"{2 * (p.address - pos)}x")
            fmt.append(f"{2 * p.width}s" if p.type is DataType.STRING else _FMT[p.type])
            pos = p.address + p.width
    if fast:
        unpack_from = struct.Struct("".join(fmt)).unpack_from
        return unpack_from, [_post(p) for p in points]
    decoders = [register_decoder(p, p.address - start) for p in points]
    return (lambda b: [d(b) for d in decoders]), [None] * len(points)
