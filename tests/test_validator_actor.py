"""Validator actor on the embedded log with the real Avro codec."""

from __future__ import annotations

import anyio
import pytest
from stage_log import open_log, read_all, wait_until

from otgate.actors.log.publisher import ReadingPublisher
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.records import Classification, Quality, Reading
from otgate.actors.stage_codec import LogCodec, prepare
from otgate.actors.validator.actor import ValidatorActor
from otgate.actors.validator.config import ParameterRule, ValidatorConfig

S = 1_000_000_000
T0 = 1_700_000_000 * S


def rd(t: float, value, *, parameter="temp", device_time=True, cls=Classification.TELEMETRY):
    dt = T0 + round(t * S)
    return Reading(asset_id="pump-1", parameter=parameter, value=value, classification=cls,
                   device_time=dt if device_time else None, gateway_time=dt, seq=int(t * 10))


@pytest.mark.anyio
async def test_raw_to_clean_dlq_and_events_then_commit(tmp_path):
    lg = await open_log(tmp_path)
    try:
        schemas = EmbeddedSchemaStore(lg)
        pub = ReadingPublisher(lg, schemas)
        await pub.start()
        await pub.publish([
            rd(0, 10.0), rd(1, 500.0), rd(1, 11.0), rd(10, 12.0), rd(11, 13.0, device_time=False),
            rd(12, "open", parameter="valve", cls=Classification.EVENT),
        ])
        await lg.append("telemetry.raw", [(b"pump-1", b"\x00garbage"), (b"pump-1", b"\x07junk")])
        codec = LogCodec(schemas)
        cfg = ValidatorConfig(rules=[
            ParameterRule(parameter="temp", min=0, max=100, expected_interval_s=1.0),
        ])
        v = ValidatorActor("validator", cfg, lg, codec)
        async with anyio.create_task_group() as tg:
            await tg.start(v.run)

            async def done() -> bool:
                return v.consumed >= 8

            await wait_until(done)
            tg.cancel_scope.cancel()
        clean = await read_all(lg, codec, "telemetry.clean")
        assert [(r.value, r.quality) for r in clean] == [
            (10.0, Quality.GOOD), (500.0, Quality.BAD), (12.0, Quality.GOOD),
            (13.0, Quality.UNCERTAIN),
        ]
        assert clean[3].device_time == clean[3].gateway_time
        dlq = await read_all(lg, codec, "dlq.telemetry")
        assert [(d.reason, d.source_offset) for d in dlq] == [("duplicate", 2),
                                                              ("unknown_schema", 5), ("undecodable", 6)]
        assert dlq[2].stage == "validator" and "WireFormatError" in dlq[2].error
        events = await read_all(lg, codec, "events.clean")
        assert sorted((e.parameter, str(e.value)) for e in events) == [
            ("temp:gap", "9.0"), ("valve", "open"),
        ]
        # offsets committed: a new validator in the same group sees nothing left
        v2 = ValidatorActor("validator", cfg, lg, codec)
        await v2.setup()
        assert await v2.consumer.fetch(100, 0.1) == []
        await v2.teardown()
        m = v.metrics()
        assert m["rule_out_of_range_total"] == 1 and m["undecodable_total"] == 2
    finally:
        await lg.close()


@pytest.mark.anyio
async def test_commits_wait_for_the_interval_or_a_caught_up_fetch(tmp_path):
    """Offsets are committed only after the outputs are appended, at most every
    commit_interval_s, and as soon as a fetch finds nothing left."""
    lg = await open_log(tmp_path)
    try:
        schemas = EmbeddedSchemaStore(lg)
        pub = ReadingPublisher(lg, schemas)
        await pub.start()
        await pub.publish([rd(t, 10.0 + t) for t in range(4)])
        codec = LogCodec(schemas)
        cfg = ValidatorConfig(commit_interval_s=3600.0, batch_size=2)
        v = ValidatorActor("validator", cfg, lg, codec)
        await v.setup()
        await prepare(codec, [*cfg.inputs, *v.output_topics()])
        await v.process(await v.consumer.fetch(2, 0.1))
        await v.process(await v.consumer.fetch(2, 0.1))
        assert len(await read_all(lg, codec, "telemetry.clean")) == 4
        other = ValidatorActor("validator", cfg, lg, codec)
        await other.setup()
        assert len(await other.consumer.fetch(100, 0.1)) == 4  # held back: nothing committed
        await other.consumer.close()
        assert v.metrics()["commits_total"] == 0
        # the running loop commits on its first empty fetch (caught up)
        async with anyio.create_task_group() as tg:
            tg.start_soon(v.main)

            async def committed() -> bool:
                return v.metrics()["commits_total"] == 1

            await wait_until(committed)
            tg.cancel_scope.cancel()
        await v.teardown()
        late = ValidatorActor("validator", cfg, lg, codec)
        await late.setup()
        assert await late.consumer.fetch(100, 0.1) == []
        await late.teardown()
    finally:
        await lg.close()
