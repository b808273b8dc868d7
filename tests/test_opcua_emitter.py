"""The Reading emitter shared by the OPC UA and MQTT sessions (no peer needed)."""

from __future__ import annotations

import anyio
import pytest

from otgate.actors.records import Classification, Quality, Reading
from otgate.protocols.opcua.emitter import Emitter, PointMeta, coerce_value

pytestmark = pytest.mark.anyio


def make(batch_max: int = 1000) -> tuple[Emitter, list[list[Reading]]]:
    batches: list[list[Reading]] = []

    async def publish(batch: list[Reading]) -> None:
        batches.append(list(batch))

    return Emitter(
        adapter_id="a1", adapter_version="v", publish=publish, batch_max=batch_max
    ), batches


async def test_seq_identity_and_batches() -> None:
    em, batches = make(batch_max=2)
    p = PointMeta("pump", "temp", "degC", Classification.TELEMETRY)
    for v in (1.0, 1.0, 2.0):
        assert em.add(p, v, Quality.GOOD, 123)
    assert em.full
    assert await em.flush() == 3
    assert [len(b) for b in batches] == [2, 1]
    flat = [r for b in batches for r in b]
    assert [r.seq for r in flat] == [1, 2, 3]
    assert all(r.adapter_id == "a1" and r.unit == "degC" and r.device_time == 123 for r in flat)
    assert em.pending == [] and em.published == 3


async def test_event_and_alarm_points_emit_on_change_of_value_or_quality() -> None:
    em, _ = make()
    ev = PointMeta("m", "running", "", Classification.EVENT)
    al = PointMeta("m", "trip", "", Classification.ALARM)
    results = [
        em.add(ev, False, Quality.GOOD, None),
        em.add(ev, False, Quality.GOOD, None),
        em.add(ev, True, Quality.GOOD, None),
        em.add(ev, True, Quality.BAD, None),
        em.add(al, True, Quality.GOOD, None),
        em.add(al, True, Quality.GOOD, None),
    ]
    assert results == [True, False, True, True, True, False]
    assert em.suppressed == 2 and em.bad == 1
    em.forget_last()
    assert em.add(ev, True, Quality.BAD, None)


async def test_cancelled_publish_keeps_the_batch_pending() -> None:
    gate = anyio.Event()
    seen: list[int] = []

    async def slow(batch: list[Reading]) -> None:
        await gate.wait()
        seen.append(len(batch))

    em = Emitter(adapter_id="a", adapter_version="v", publish=slow)
    em.add(PointMeta("x", "y", "", Classification.TELEMETRY), 1, Quality.GOOD, None)
    with anyio.move_on_after(0.05):
        await em.flush()
    assert len(em.pending) == 1 and seen == []
    gate.set()
    assert await em.flush() == 1 and seen == [1]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, (True, None)),
        (7, (7, None)),
        (2.5, (2.5, None)),
        (float("inf"), (None, "not_finite")),
        ("on", ("on", None)),
        (None, (None, "null")),
        (b"\x00", (None, "unsupported_type:bytes")),
    ],
)
def test_coerce_value(raw: object, expected: tuple) -> None:
    assert coerce_value(raw) == expected
