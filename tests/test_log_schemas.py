"""Schema stores: the Confluent REST registry client with its disk cache (against
a registry server the test starts), the no-registry local cache, and the
embedded log's schema table. Plus decoding v1 records with a v2 reader."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from peers.registry import Registry, registry  # noqa: F401

from otgate.actors.log import avro
from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.publisher import Codec, Decoder
from otgate.actors.log.schemas import (
    EmbeddedSchemaStore,
    RegistrySchemaStore,
    SchemaRejected,
    SchemaUnavailable,
)
from otgate.actors.records import Aggregate, Quality, Reading

V1 = avro.avro_schema(Reading)


def reading(i: int = 0) -> Reading:
    return Reading(
        asset_id="pump-1",
        parameter="p",
        value=i * 1.5,
        quality=Quality.SUSPECT,
        gateway_time=1_700_000_000_000_000_000 + i,
        seq=i,
    )


@pytest.mark.anyio
async def test_registry_ids_are_cached_and_used_offline(registry: Registry, tmp_path: Path) -> None:  # noqa: F811
    cache = tmp_path / "schemas.json"
    s1 = RegistrySchemaStore(registry.url, cache)
    sid = await s1.register("telemetry.raw-value", V1)
    assert sid in registry.state.schemas
    assert await s1.register("telemetry.raw-value", V1) == sid
    assert json.loads(cache.read_text())["ids"][str(sid)]

    registry.state.available = False
    before = registry.state.requests
    s2 = RegistrySchemaStore(registry.url, cache)  # a gateway restarting offline
    assert await s2.register("telemetry.raw-value", V1) == sid
    assert await s2.get(sid) == avro.canonical(V1)
    assert registry.state.requests == before, "offline start must not need the registry"
    with pytest.raises(SchemaUnavailable):
        await s2.register("telemetry.1s-value", avro.avro_schema(Aggregate))


@pytest.mark.anyio
async def test_unreachable_registry_is_schema_unavailable(tmp_path: Path) -> None:
    s = RegistrySchemaStore("http://127.0.0.1:9", tmp_path / "c.json", timeout_s=2)
    with pytest.raises(SchemaUnavailable) as e:
        await s.register("x-value", V1)
    assert e.value.retriable


@pytest.mark.anyio
async def test_unknown_id_is_fetched_from_the_registry(registry: Registry, tmp_path: Path) -> None:  # noqa: F811
    other = RegistrySchemaStore(registry.url, tmp_path / "other.json")  # another gateway
    sid = await other.register("telemetry.raw-value", V1)
    mine = RegistrySchemaStore(registry.url, tmp_path / "mine.json")
    assert mine.cached(sid) is None
    value = avro.compile_encoder(Reading)(reading(3), avro.wire_header(sid))
    dec = Decoder(mine)
    with pytest.raises(SchemaUnavailable):
        dec.decode("telemetry.raw", value)
    assert await dec.decode_async("telemetry.raw", value) == reading(3)
    assert dec.decode("telemetry.raw", value) == reading(3)  # now cached


def _v2() -> type:
    class Reading(msgspec.Struct, frozen=True, kw_only=True):
        asset_id: str
        parameter: str
        value: float | int | bool | str | None
        unit: str = ""
        quality: Quality = Quality.GOOD
        gateway_time: int
        seq: int = 0
        site: str = "plant-a"

    return Reading


def _v3() -> type:
    class Reading(msgspec.Struct, frozen=True, kw_only=True):
        asset_id: str
        parameter: str
        value: float | int | bool | str | None
        gateway_time: int
        line: str  # no default: BACKWARD-incompatible

    return Reading


@pytest.mark.anyio
async def test_backward_evolution_v2_reads_v1(registry: Registry, tmp_path: Path) -> None:  # noqa: F811
    store = RegistrySchemaStore(registry.url, tmp_path / "c.json")
    codec = Codec(store)
    sid1 = await codec.prepare("telemetry.raw", Reading)
    old = codec.encode("telemetry.raw", reading(7))
    v2 = _v2()
    sid2 = await store.register("telemetry.raw-value", avro.avro_schema(v2))
    assert sid2 != sid1
    back = Decoder(store).decode("telemetry.raw", old, v2)
    assert (back.asset_id, back.value, back.quality, back.seq, back.site) == (
        "pump-1",
        7 * 1.5,
        Quality.SUSPECT,
        7,
        "plant-a",
    )
    with pytest.raises(SchemaRejected):
        await store.register("telemetry.raw-value", avro.avro_schema(_v3()))


@pytest.mark.anyio
async def test_local_cache_without_registry_assigns_stable_ids(tmp_path: Path) -> None:
    a = RegistrySchemaStore(None, tmp_path / "c.json")
    b = RegistrySchemaStore(None, tmp_path / "c.json")
    i1 = await a.register("telemetry.raw-value", V1)
    i2 = await b.register("telemetry.1s-value", avro.avro_schema(Aggregate))
    assert i1 != i2
    assert await b.register("telemetry.raw-value", V1) == i1
    assert await a.get(i2) == avro.canonical(avro.avro_schema(Aggregate))
    with pytest.raises(SchemaUnavailable):
        await a.get(999)


@pytest.mark.anyio
async def test_embedded_schema_table_shared_by_log_instances(tmp_path: Path) -> None:
    l1, l2 = EmbeddedLog(tmp_path / "l.sqlite"), EmbeddedLog(tmp_path / "l.sqlite")
    await l1.start()
    await l2.start()
    try:
        s1, s2 = EmbeddedSchemaStore(l1), EmbeddedSchemaStore(l2)
        i1 = await s1.register("telemetry.raw-value", V1)
        assert await s2.register("telemetry.raw-value", V1) == i1
        assert await s2.get(i1) == avro.canonical(V1)
        i2 = await s2.register("telemetry.raw-value", avro.avro_schema(_v2()))
        assert i2 != i1
        assert (await l1.latest_schema("telemetry.raw-value"))[0] == i2  # type: ignore[index]
        with pytest.raises(SchemaUnavailable):
            await s1.get(12345)
    finally:
        await l1.close()
        await l2.close()
