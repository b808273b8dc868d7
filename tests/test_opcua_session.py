"""OPC UA device session against a real asyncua server (tests/peers/opcua.py)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from asyncua import ua
from peers.opcua import (
    OpcUaPeer,
    opcua_server_fixture,  # noqa: F401  (registers the fixture)
)

from otgate.actors.context import BuildContext
from otgate.actors.messages import State
from otgate.actors.records import Classification, Quality, Reading
from otgate.protocols.opcua import OpcUaSource
from otgate.protocols.opcua.session import OpcUaSession, leaf_error

pytestmark = pytest.mark.anyio


class Collector:
    """A publish target that keeps every batch (stands in for the log)."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.batches = 0

    async def publish(self, batch: list[Reading]) -> None:
        self.batches += 1
        self.readings.extend(batch)

    def of(self, parameter: str) -> list[Reading]:
        return [r for r in self.readings if r.parameter == parameter]

    def last(self, parameter: str) -> Reading | None:
        got = self.of(parameter)
        return got[-1] if got else None


async def wait_until(cond: Callable[[], Any], within: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or cond}")
        await anyio.sleep(0.02)


def make_cfg(peer: OpcUaPeer, **over: Any) -> OpcUaSource:
    points = [
        {"node_id": peer.node_id("Temp"), "asset_id": "pump1", "parameter": "temp", "unit": "degC"},
        {"node_id": peer.node_id("Pressure"), "asset_id": "pump1", "parameter": "pressure"},
        {"node_id": peer.node_id("Count"), "asset_id": "pump1", "parameter": "count"},
        {
            "node_id": peer.node_id("Running"),
            "asset_id": "pump1",
            "parameter": "running",
            "classification": "EVENT",
        },
        {
            "node_id": peer.node_id("Alarm"),
            "asset_id": "pump1",
            "parameter": "alarm",
            "classification": "ALARM",
        },
        {"node_id": peer.node_id("Name"), "asset_id": "pump1", "parameter": "name"},
    ]
    raw = {
        "type": "opcua",
        "id": "ua1",
        "endpoint": peer.url,
        "points": points,
        "publishing_interval_ms": 50,
        "sampling_interval_ms": 20,
        "poll_interval_s": 0.1,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "watchdog_interval_s": 0.5,
        "request_timeout_s": 2.0,
        "connect_timeout_s": 5.0,
    }
    raw.update(over)
    return msgspec.convert(raw, OpcUaSource)


def make_session(cfg: OpcUaSource, sink: Collector, tmp: Path) -> OpcUaSession:
    ctx = BuildContext(gateway_id="gw", publish=sink.publish, state_dir=tmp)
    actor = cfg.build(ctx)
    assert isinstance(actor, OpcUaSession)
    return actor


async def test_subscription_delivers_values_quality_and_timestamps(opcua_server, tmp_path):
    sink = Collector()
    session = make_session(make_cfg(opcua_server), sink, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await wait_until(
            lambda: len({r.parameter for r in sink.readings}) == 6, what="initial values"
        )
        assert session.state is State.RUNNING
        assert session.mode_active.value == "subscription"
        temp = sink.last("temp")
        assert temp.value == 20.0 and temp.quality is Quality.GOOD and temp.unit == "degC"
        assert sink.last("name").value == "pump-1"
        assert sink.last("count").value == 0 and isinstance(sink.last("count").value, int)
        assert sink.last("running").classification is Classification.EVENT
        assert sink.last("alarm").classification is Classification.ALARM

        src = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
        await opcua_server.write("Temp", 21.5, source_time=src)
        await wait_until(lambda: sink.last("temp").value == 21.5, what="temp 21.5")
        assert sink.last("temp").device_time == int(src.timestamp()) * 10**9 + 678901000

        await opcua_server.write("Pressure", 1.7, status=ua.StatusCodes.UncertainLastUsableValue)
        await wait_until(lambda: sink.last("pressure").value == 1.7, what="uncertain pressure")
        assert sink.last("pressure").quality is Quality.UNCERTAIN

        await opcua_server.write("Pressure", 1.8, status=ua.StatusCodes.BadSensorFailure)
        await wait_until(lambda: sink.last("pressure").quality is Quality.BAD, what="bad pressure")
        assert sink.last("pressure").value is None

        await opcua_server.write("Temp", math.nan)
        await wait_until(lambda: sink.last("temp").quality is Quality.BAD, what="NaN → BAD")
        assert sink.last("temp").value is None

        await opcua_server.write("Running", True)
        await opcua_server.write("Count", 7)
        await wait_until(lambda: sink.last("count").value == 7, what="count 7")
        await wait_until(lambda: sink.last("running").value is True, what="running")
        assert [r.value for r in sink.of("running")] == [False, True]

        seqs = [r.seq for r in sink.readings]
        assert seqs == list(range(1, len(seqs) + 1))
        assert all(r.adapter_id == "ua1" and r.adapter_version for r in sink.readings)
        assert all(r.gateway_time > 0 for r in sink.readings)
        tg.cancel_scope.cancel()
    assert session.state is State.STOPPED


async def test_event_points_emit_on_change_only(opcua_server, tmp_path):
    sink = Collector()
    session = make_session(make_cfg(opcua_server, mode="polling"), sink, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await wait_until(lambda: session.polls >= 5, what="5 polls")
        assert len(sink.of("running")) == 1  # unchanged EVENT: emitted once
        assert len(sink.of("alarm")) == 1
        assert len(sink.of("temp")) >= 5  # TELEMETRY: every poll
        await opcua_server.write("Alarm", True)
        await wait_until(lambda: sink.last("alarm").value is True, what="alarm raised")
        polls = session.polls
        await wait_until(lambda: session.polls >= polls + 3, what="3 more polls")
        assert [r.value for r in sink.of("alarm")] == [False, True]
        tg.cancel_scope.cancel()


async def test_reconnect_after_server_restart_recreates_subscription(opcua_server, tmp_path):
    sink = Collector()
    session = make_session(make_cfg(opcua_server), sink, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await wait_until(lambda: session.state is State.RUNNING and sink.last("temp"), what="up")

        await opcua_server.stop()
        await wait_until(lambda: session.state is State.DEGRADED, what="DEGRADED after stop")
        await wait_until(lambda: sink.last("temp").quality is Quality.BAD, what="points marked BAD")
        assert session.connections_lost == 1

        await opcua_server.start()  # a brand-new server on the same port
        await wait_until(lambda: session.state is State.RUNNING, within=15, what="RUNNING again")
        await wait_until(lambda: sink.last("temp").quality is Quality.GOOD, what="initial GOOD")
        await opcua_server.write("Temp", 33.0)
        await wait_until(lambda: sink.last("temp").value == 33.0, what="new value after restart")
        assert session.connects == 2
        assert session.mode_active.value == "subscription"
        seqs = [r.seq for r in sink.readings]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        tg.cancel_scope.cancel()


async def test_starts_degraded_and_connects_when_server_appears(tmp_path):
    peer = OpcUaPeer()  # not started yet
    sink = Collector()
    session = make_session(make_cfg(peer), sink, tmp_path)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)  # readiness does not wait for the peer
            await wait_until(lambda: session.connect_failures >= 1, what="a failed connect")
            assert session.state is State.DEGRADED
            await peer.start()
            await wait_until(lambda: sink.last("temp") is not None, within=15, what="values")
            assert session.state is State.RUNNING
            tg.cancel_scope.cancel()
    finally:
        await peer.stop()


async def test_auto_mode_falls_back_to_polling(tmp_path):
    peer = OpcUaPeer()
    peer.disable_subscriptions = True
    await peer.start()
    try:
        sink = Collector()
        session = make_session(make_cfg(peer, mode="auto"), sink, tmp_path)
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            await wait_until(lambda: session.polls >= 2, what="polling")
            assert session.mode_active.value == "polling"
            await peer.write("Temp", 25.0, status=ua.StatusCodes.UncertainInitialValue)
            await wait_until(lambda: sink.last("temp").value == 25.0, what="polled value")
            assert sink.last("temp").quality is Quality.UNCERTAIN
            assert sink.last("temp").device_time is not None
            tg.cancel_scope.cancel()
    finally:
        await peer.stop()


async def test_unknown_node_is_bad_and_others_keep_flowing(opcua_server, tmp_path):
    cfg = make_cfg(opcua_server)
    raw = msgspec.to_builtins(cfg)
    raw["points"].append(
        {"node_id": "ns=2;s=NoSuchNode", "asset_id": "pump1", "parameter": "ghost"}
    )
    cfg = msgspec.convert(raw, OpcUaSource)
    sink = Collector()
    session = make_session(cfg, sink, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await wait_until(lambda: sink.last("ghost") is not None, what="ghost reported")
        assert sink.last("ghost").quality is Quality.BAD
        await opcua_server.write("Temp", 19.0)
        await wait_until(lambda: sink.last("temp").value == 19.0, what="others flow")
        assert session.items_rejected == 1
        tg.cancel_scope.cancel()


async def test_username_password(tmp_path):
    peer = OpcUaPeer()
    peer.users = {"operator": "s3cret"}
    await peer.start()
    try:
        sink = Collector()
        session = make_session(
            make_cfg(peer, username="operator", password="s3cret"), sink, tmp_path
        )
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            await wait_until(lambda: sink.last("temp") is not None, what="values with login")
            tg.cancel_scope.cancel()

        bad = make_session(
            make_cfg(peer, username="operator", password="wrong"), Collector(), tmp_path
        )
        with pytest.raises(Exception) as info:
            with anyio.fail_after(10):
                await bad.run()
        assert "s3cret" not in str(info.value) and "wrong" not in (bad.last_error or "")
        assert bad.state is State.FAILED
        assert type(leaf_error(info.value)).__name__ == "BadUserAccessDenied"
    finally:
        await peer.stop()


async def test_security_policy_sign_and_encrypt_with_login(tmp_path):
    peer = OpcUaPeer()
    client_files = await peer.make_certificates(tmp_path)
    peer.users = {"operator": "s3cret"}
    await peer.start()
    try:
        sink = Collector()
        cfg = make_cfg(
            peer,
            security_policy="Basic256Sha256",
            security_mode="SignAndEncrypt",
            username="operator",
            password="s3cret",
            **client_files,
        )
        session = make_session(cfg, sink, tmp_path)
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            await wait_until(lambda: sink.last("temp") is not None, what="values over encryption")
            await peer.write("Temp", 24.0)
            await wait_until(lambda: sink.last("temp").value == 24.0, what="update")
            tg.cancel_scope.cancel()

        plain = make_session(
            make_cfg(peer, username="operator", password="s3cret"), Collector(), tmp_path
        )
        with pytest.raises(BaseException) as info:
            with anyio.fail_after(15):
                await plain.run()
        assert plain.state is State.FAILED
        assert "No matching endpoints" in str(leaf_error(info.value))
    finally:
        await peer.stop()


async def test_absolute_deadband_filters_small_changes(opcua_server, tmp_path):
    cfg = make_cfg(opcua_server)
    raw = msgspec.to_builtins(cfg)
    raw["points"] = [
        {**raw["points"][0], "deadband_type": "absolute", "deadband": 1.0},
        raw["points"][2],
    ]
    sink = Collector()
    session = make_session(msgspec.convert(raw, OpcUaSource), sink, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await wait_until(lambda: sink.last("temp") is not None, what="initial")
        # steps chosen so the result is the same whether the server compares with
        # the last reported value (the spec) or the previous one (asyncua's server)
        for value in (20.4, 21.5, 21.9, 23.0):
            await opcua_server.write("Temp", value)
            await opcua_server.write("Count", int(value * 10))  # a marker per step
            await wait_until(lambda v=value: sink.last("count").value == int(v * 10), what="step")
        await wait_until(lambda: sink.last("temp").value == 23.0, what="last big step")
        assert [r.value for r in sink.of("temp")] == [20.0, 21.5, 23.0]
        tg.cancel_scope.cancel()
