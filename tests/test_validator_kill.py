"""The validator killed -9 between appending a batch's outputs (unsynced: no fsync
of their own) and committing its input offsets: the outputs are on the log, the
input was not committed, and the restarted stage writes them again: every
reading reaches ``telemetry.clean`` (some twice), and the commit then covers all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import anyio
import pytest
from stage_log import open_log, read_all, wait_until

from otgate.actors.log.publisher import ReadingPublisher
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.records import Reading
from otgate.actors.stage_codec import LogCodec, prepare
from otgate.actors.validator.actor import ValidatorActor
from otgate.actors.validator.config import ValidatorConfig

S = 1_000_000_000
T0 = 1_700_000_000 * S
N = 50

# One batch validated and appended, then killed before the (held back) commit.
CHILD = """
import sys, time
import anyio
from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.schemas import EmbeddedSchemaStore
from otgate.actors.stage_codec import LogCodec, prepare
from otgate.actors.validator.actor import ValidatorActor
from otgate.actors.validator.config import ValidatorConfig

async def main():
    lg = EmbeddedLog(sys.argv[1])
    await lg.start()
    codec = LogCodec(EmbeddedSchemaStore(lg))
    v = ValidatorActor("validator", ValidatorConfig(commit_interval_s=3600.0), lg, codec)
    await v.setup()
    await prepare(codec, [*v.config.inputs, *v.output_topics()])
    await v.process(await v.consumer.fetch(1000, 1.0))
    print(v.consumed, v.metrics()["commits_total"], flush=True)
    time.sleep(60)

anyio.run(main)
"""


def reading(i: int) -> Reading:
    t = T0 + i * S
    return Reading(asset_id="pump-1", parameter="temp", value=float(i), device_time=t,
                   gateway_time=t, seq=i)


def kill_after_one_batch(log_path) -> list[str]:
    """Run CHILD, kill it -9 once it appended; what it printed (consumed, commits)."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(log_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        return proc.stdout.readline().split()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.anyio
async def test_killed_between_unsynced_append_and_commit_loses_nothing(tmp_path):
    lg = await open_log(tmp_path)
    try:
        schemas = EmbeddedSchemaStore(lg)
        pub = ReadingPublisher(lg, schemas)
        await pub.start()
        await pub.publish([reading(i) for i in range(N)])
        assert kill_after_one_batch(lg.path) == [str(N), "0.0"]  # appended, not committed
        codec = LogCodec(schemas)
        await prepare(codec, ["telemetry.clean"])
        assert [r.seq for r in await read_all(lg, codec, "telemetry.clean")] == list(range(N))
        cfg = ValidatorConfig(commit_interval_s=3600.0)
        v = ValidatorActor("validator", cfg, lg, codec)
        async with anyio.create_task_group() as tg:
            await tg.start(v.run)

            async def replayed_and_committed() -> bool:
                return v.consumed == N and v.metrics()["commits_total"] == 1

            await wait_until(replayed_and_committed)
            tg.cancel_scope.cancel()
        clean = await read_all(lg, codec, "telemetry.clean")
        assert [r.seq for r in clean] == list(range(N)) * 2  # the replay repeats, loses nothing
        late = ValidatorActor("validator", cfg, lg, codec)
        await late.setup()
        assert await late.consumer.fetch(100, 0.1) == []  # the commit covers every input
        await late.teardown()
    finally:
        await lg.close()
