"""Request planning: the fewest reads that cover a device's points.

Points of one unit and one table are sorted by address and merged into a read
while the read stays within ``max_registers_per_read`` (``max_bits_per_read``
for coils / discrete inputs) and the hole between the read so far and the
next point is at most ``max_gap``. Overlapping points (a 32-bit value and a
bit of its first register) share the read. The plan is computed once per
configuration; every poll executes the same reads in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otgate.actors.records import Classification
from otgate.protocols.modbus.config import Point, PointGroup, PollSettings, Table
from otgate.protocols.modbus.convert import (
    Decoder,
    Unpacker,
    bit_decoder,
    register_decoder,
    request_unpacker,
)


@dataclass(slots=True)
class PlannedPoint:
    """One point inside a read: identity, decoder, and its change state."""

    point: Point
    asset_id: str
    decode: Decoder  # payload -> value | None on its own (tests, slow path)
    post: Callable[[Any], Any] | None = None  # finishing step after the batch unpack
    on_change: bool = False  # EVENT / ALARM: emit only when (value, quality) changes
    template: Any = None  # the session's Reading with this point's static fields
    last: object = None  # last emitted (value, quality) for EVENT / ALARM points


@dataclass(slots=True)
class ReadRequest:
    """One Modbus read: unit, table, address range and the points it serves."""

    unit_id: int
    table: Table
    address: int
    count: int
    timeout: float
    points: list[PlannedPoint] = field(default_factory=list)
    unpack: Unpacker | None = None  # payload -> one raw value per point, in order

    @property
    def function_code(self) -> int:
        return {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}[self.table]

    def __repr__(self) -> str:
        return (
            f"ReadRequest(unit={self.unit_id}, fc={self.function_code}, "
            f"address={self.address}, count={self.count}, points={len(self.points)})"
        )


def plan_reads(groups: list[PointGroup], settings: PollSettings) -> list[ReadRequest]:
    """The reads covering every point of ``groups``, ordered by unit, table, address."""
    requests: list[ReadRequest] = []
    for group in groups:
        timeout = group.timeout or settings.timeout
        by_table: dict[Table, list[Point]] = {}
        for p in group.points:
            by_table.setdefault(p.table, []).append(p)
        for table in Table:
            pts = sorted(by_table.get(table, ()), key=lambda p: (p.address, p.width))
            if not pts:
                continue
            limit = settings.max_bits_per_read if table.is_bits else settings.max_registers_per_read
            spans: list[tuple[int, int, list[Point]]] = []
            for p in pts:
                end = p.address + p.width
                if spans:
                    start, cur_end, members = spans[-1]
                    new_end = max(end, cur_end)
                    if p.address - cur_end <= settings.max_gap and new_end - start <= limit:
                        spans[-1] = (start, new_end, [*members, p])
                        continue
                spans.append((p.address, end, [p]))
            for start, end, members in spans:
                req = ReadRequest(group.unit_id, table, start, end - start, timeout)
                req.unpack, posts = request_unpacker(members, start, table.is_bits)
                for p, post in zip(members, posts, strict=True):
                    index = p.address - start
                    dec = bit_decoder(index) if table.is_bits else register_decoder(p, index)
                    on_change = p.classification is not Classification.TELEMETRY
                    asset = p.asset_id or group.asset_id or ""
                    req.points.append(PlannedPoint(p, asset, dec, post, on_change))
                requests.append(req)
    return requests
