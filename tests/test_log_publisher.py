"""ReadingPublisher -> log -> Decoder on both backends, and the operator
commands (``otgate log topics`` / ``otgate log read``) on what it wrote,
including reading while another process writes and after it was killed."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest
from peers.registry import Registry, registry  # noqa: F401
from peers.tansu import Tansu, start_tansu

from otgate.actors.log import cmd
from otgate.actors.log.config import LogConfig
from otgate.actors.log.open import decoder, open_log, open_publisher
from otgate.actors.log.topics import RAW_TOPIC
from otgate.actors.records import Classification, Quality, Reading


@pytest.fixture(scope="module")
def broker() -> Iterator[Tansu]:
    t = start_tansu()
    try:
        yield t
    finally:
        t.stop()


def readings(n: int, start: int = 0) -> list[Reading]:
    cls = list(Classification)
    return [
        Reading(
            asset_id=f"asset-{i % 4}",
            parameter=f"p{i % 3}",
            value=[i * 0.5, i, i % 2 == 0, f"s{i}"][i % 4],
            unit="bar",
            quality=Quality.GOOD if i % 5 else Quality.BAD,
            classification=cls[0] if i % 7 else cls[(i // 7) % 3],
            device_time=None if i % 6 == 0 else 1_700_000_000_000_000_000 + i,
            gateway_time=1_700_000_000_000_000_000 + i,
            seq=i,
            adapter_id="sim",
        )
        for i in range(start, start + n)
    ]


def config(kind: str, tmp_path: Path, request) -> LogConfig:
    if kind == "embedded":
        return LogConfig()
    b = request.getfixturevalue("broker")
    return msgspec.convert(
        {
            "backend": "kafka",
            "bootstrap_servers": [b.bootstrap],
            "idempotence": False,
            "linger_ms": 1,
            "default_partitions": 2,
        },
        LogConfig,
    )


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["embedded", "kafka"])
async def test_publish_routes_by_classification_and_decodes(kind, tmp_path, request) -> None:
    cfg = config(kind, tmp_path, request)
    log = await open_log(cfg, tmp_path)
    try:
        pub = await open_publisher(cfg, tmp_path, log)
        sent = readings(200)
        await pub.publish(sent[:150])
        await pub.publish(sent[150:])
        dec = decoder(cfg, tmp_path, log)
        want = {t: [r for r in sent if r.classification is c] for c, t in RAW_TOPIC.items()}
        assert all(want.values())
        for topic, expected in want.items():
            rows = await cmd.read_rows(cfg, tmp_path, topic, limit=1000)
            assert all("_error" not in r for r in rows), rows[:1]
            got = [
                msgspec.convert({k: v for k, v in r.items() if not k.startswith("_")}, Reading)
                for r in rows
            ]
            assert sorted(got, key=lambda r: r.seq) == expected
            assert all(r["_key"] == r["asset_id"] for r in rows)
            recs = await log.read(topic, 0, 0, 1)
            if recs:
                assert recs[0].value[0] == 0  # Confluent magic byte
                assert await dec.decode_async(topic, recs[0].value) in expected
        names = {r["topic"] for r in await cmd.topics_rows(cfg, tmp_path)}
        assert {"telemetry.raw", "alarms.clean", "dlq.telemetry", "logs.gateway"} <= names
    finally:
        await log.close()


@pytest.mark.anyio
async def test_publish_with_registry_then_offline(registry: Registry, tmp_path) -> None:  # noqa: F811
    cfg = LogConfig(registry_url=registry.url)
    log = await open_log(cfg, tmp_path)
    try:
        pub = await open_publisher(cfg, tmp_path, log)
        await pub.publish(readings(10))
        registry.state.available = False  # registry gone: restart still writes
        pub2 = await open_publisher(cfg, tmp_path, log)
        await pub2.publish(readings(10, start=10))
        rows = await cmd.read_rows(cfg, tmp_path, "telemetry.raw", limit=100)
        assert [r["seq"] for r in rows] == [
            r.seq for r in readings(20) if r.classification is Classification.TELEMETRY
        ]
    finally:
        await log.close()


def test_cli_commands_print_table_and_json(tmp_path, monkeypatch, capsys) -> None:
    cfg = LogConfig()

    async def fill() -> None:
        log = await open_log(cfg, tmp_path)
        pub = await open_publisher(cfg, tmp_path, log)
        await pub.publish(readings(30))
        await log.close()

    anyio.run(fill)
    monkeypatch.setattr(cmd, "_load", lambda path: (cfg, tmp_path))
    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers())

    args = parser.parse_args(
        [
            "log",
            "read",
            "telemetry.raw",
            "--config",
            "x.toml",
            "--from",
            "3",
            "--limit",
            "5",
            "--json",
        ]
    )
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    objs = [json.loads(x) for x in lines]
    assert [o["_offset"] for o in objs] == [3, 4, 5, 6, 7]
    for key in (
        "asset_id",
        "parameter",
        "value",
        "unit",
        "quality",
        "device_time",
        "gateway_time",
        "adapter_id",
        "seq",
    ):
        assert key in objs[0]

    args = parser.parse_args(["log", "read", "telemetry.raw", "--config", "x.toml", "--limit", "2"])
    args.func(args)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["partition", "offset", "asset_id", "parameter"]
    assert len(out) == 4 and "2023-11-14T22:13:20" in out[2]

    args = parser.parse_args(["log", "topics", "--config", "x.toml", "--json"])
    args.func(args)
    topics = {json.loads(x)["topic"]: json.loads(x) for x in capsys.readouterr().out.splitlines()}
    raw = sum(1 for r in readings(30) if r.classification is Classification.TELEMETRY)
    assert topics["telemetry.raw"]["records"] == raw
    assert topics["alarms.raw"]["retention_s"] is None

    args = parser.parse_args(["log", "read", "nope", "--config", "x.toml"])
    with pytest.raises(SystemExit, match="no topic 'nope'"):
        args.func(args)

    async def commit() -> None:
        log = await open_log(cfg, tmp_path)
        c = log.consumer("sink.old", ["telemetry.raw"])
        await c.commit({("telemetry.raw", 0): 4})
        await c.close()
        await log.close()

    anyio.run(commit)
    args = parser.parse_args(["log", "groups", "--config", "x.toml", "--json"])
    assert args.func(args) == 0
    (group,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert group == {"group": "sink.old", "topic": "telemetry.raw", "partition": 0,
                     "committed": 4, "lag": raw - 4}
    args = parser.parse_args(["log", "drop-group", "sink.old", "--config", "x.toml"])
    assert args.func(args) == 0
    assert "dropped group sink.old (1 partition offsets)" in capsys.readouterr().out
    assert args.func(args) == 1  # gone: said so on stderr
    assert "no group 'sink.old'" in capsys.readouterr().err
    groups = parser.parse_args(["log", "groups", "--config", "x.toml"])
    assert groups.func(groups) == 0
    assert capsys.readouterr().out == "(no consumer groups)\n"
    kafka = msgspec.convert({"backend": "kafka", "bootstrap_servers": ["127.0.0.1:9"]}, LogConfig)
    monkeypatch.setattr(cmd, "_load", lambda path: (kafka, tmp_path))
    with pytest.raises(SystemExit, match="groups live in the broker"):
        args.func(args)


PUBLISHER = r"""
import sys, anyio
from pathlib import Path
from otgate.actors.log.config import LogConfig
from otgate.actors.log.open import open_log, open_publisher
from otgate.actors.records import Reading
async def main():
    cfg, d = LogConfig(), Path(sys.argv[1])
    log = await open_log(cfg, d)
    pub = await open_publisher(cfg, d, log)
    i = 0
    while True:
        await pub.publish([Reading(asset_id="a", parameter="p", value=float(j), seq=j,
                                   gateway_time=j) for j in range(i, i + 100)])
        i += 100
        print(i, flush=True)
anyio.run(main)
"""


@pytest.mark.anyio
async def test_read_while_another_process_writes_and_after_it_died(tmp_path) -> None:
    proc = subprocess.Popen(  # noqa: ASYNC220 (fork only; reads go through a thread)
        [sys.executable, "-c", PUBLISHER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    cfg = LogConfig()
    acked = 0
    try:
        assert proc.stdout is not None
        while acked < 2000:
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
            assert line, "publisher died"
            acked = int(line)
        rows = await cmd.read_rows(cfg, tmp_path, "telemetry.raw", limit=1500)  # during writes
        assert [r["seq"] for r in rows] == list(range(1500))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    t0 = time.monotonic()
    rows = await cmd.read_rows(cfg, tmp_path, "telemetry.raw", limit=10**7)
    assert time.monotonic() - t0 < 30
    assert len(rows) >= acked
    assert [r["seq"] for r in rows] == list(range(len(rows)))


def test_otgate_log_commands_with_a_config_file(tmp_path, capsys) -> None:
    """The real entry point: ``otgate log ... --config gateway.toml``."""
    from otgate.supervisors.cli import main

    (tmp_path / "gateway.toml").write_text('[gateway]\nstate_dir = "st"\n\n[log]\n')
    cfg = LogConfig()

    async def fill() -> None:
        log = await open_log(cfg, tmp_path / "st")
        pub = await open_publisher(cfg, tmp_path / "st", log)
        await pub.publish(readings(30))
        await log.close()

    anyio.run(fill)
    conf = str(tmp_path / "gateway.toml")
    assert main(["log", "read", "alarms.raw", "--config", conf, "--json"]) == 0
    objs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    want = [r for r in readings(30) if r.classification is Classification.ALARM]
    assert want
    assert [o["seq"] for o in objs] == [r.seq for r in want]
    assert objs[0]["classification"] == "ALARM"
    assert main(["log", "topics", "--config", conf]) == 0
    out = capsys.readouterr().out
    assert "telemetry.raw" in out and "dlq.events" in out
