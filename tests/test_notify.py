"""sd_notify client against a real unix datagram socket (path and abstract)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
import uuid

import anyio
import pytest
from peers.notify_socket import (  # noqa: F401
    NotifySocket,
    abstract_notify_socket_fixture,
    notify_socket_fixture,
)

from otgate.supervisors import notify

DEADLINE_S = 5.0


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, notify_socket, abstract_notify_socket) -> NotifySocket:
    return notify_socket if request.param == "path" else abstract_notify_socket


def test_ready_watchdog_stopping_arrive_from_this_process(receiver: NotifySocket) -> None:
    for send, expected in (
        (notify.ready, "READY=1"),
        (notify.watchdog, "WATCHDOG=1"),
        (notify.stopping, "STOPPING=1"),
    ):
        assert send(receiver.env) is True
        note = receiver.recv_blocking(DEADLINE_S)
        assert (note.raw, note.pid) == (expected, os.getpid())


def test_status_reloading_and_extend_timeout(receiver: NotifySocket) -> None:
    notify.status("3 of 4 bulkheads\nrunning", receiver.env)
    assert receiver.recv_blocking().raw == "STATUS=3 of 4 bulkheads running"

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notify.reloading(receiver.env)
    note = receiver.recv_blocking()
    assert list(note.fields) == ["RELOADING", "MONOTONIC_USEC"]
    assert note.fields["RELOADING"] == "1"
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= int(note.fields["MONOTONIC_USEC"]) <= after

    notify.extend_timeout(30, receiver.env)
    assert receiver.recv_blocking().raw == "EXTEND_TIMEOUT_USEC=30000000"


def test_reads_notify_socket_from_the_process_environment(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.env_value)
    assert notify.ready() is True
    assert notify_socket.recv_blocking().raw == "READY=1"


@pytest.mark.anyio
async def test_another_process_with_the_inherited_environment_can_notify(
    abstract_notify_socket: NotifySocket,
) -> None:
    """What `otgate run` does under systemd: the env var is all it needs."""
    env = {**os.environ, **abstract_notify_socket.env}
    code = "from otgate.supervisors import notify; notify.ready()"
    proc = await anyio.run_process([sys.executable, "-c", code], env=env, check=True)
    note = await abstract_notify_socket.wait_for("READY=1", DEADLINE_S)
    assert proc.returncode == 0
    assert note.pid > 0 and note.pid != os.getpid()


def test_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.notify_socket_address() is None
    assert notify.ready() is False
    assert notify.watchdog({}) is False
    assert notify.notify_socket_address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None


def test_send_failure_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    env = {"NOTIFY_SOCKET": f"/tmp/otgate-no-such-dir-{uuid.uuid4().hex}/notify"}
    with caplog.at_level("WARNING", logger="otgate.systemd"):
        assert notify.ready(env) is False
    assert "notify_failed" in caplog.text


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "{pid}"}, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "{other}"}, None),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    pid = os.getpid()
    env = {k: v.format(pid=pid, other=pid + 1) for k, v in env.items()}
    assert notify.watchdog_interval(env) == expected


async def receive_pings(receiver: NotifySocket, n: int) -> list[str]:
    """Wait (bounded) until ``n`` datagrams have arrived; return them all."""
    received: list[str] = []
    with anyio.fail_after(DEADLINE_S):
        while len(received) < n:
            await anyio.wait_readable(receiver.sock)
            received.extend(note.raw for note in receiver.drain())
    return received


@pytest.mark.anyio
async def test_watchdog_loop_pings_only_while_alive(receiver: NotifySocket) -> None:
    alive = True
    checks = 0
    checked_enough = anyio.Event()
    checks_wanted = 0

    def is_alive() -> bool:
        nonlocal checks
        checks += 1
        if checks >= checks_wanted:
            checked_enough.set()
        return alive

    # WATCHDOG_PID names this process and WATCHDOG_USEC gives a 10 ms interval.
    env = {**receiver.env, "WATCHDOG_USEC": "20000", "WATCHDOG_PID": str(os.getpid())}
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(notify.watchdog_loop, is_alive, env=env))
        assert set(await receive_pings(receiver, 3)) == {"WATCHDOG=1"}

        # Root supervisor not alive: pings sent before the flip are already queued.
        alive = False
        receiver.drain()
        checked_enough = anyio.Event()
        checks_wanted = checks + 5
        with anyio.fail_after(DEADLINE_S):
            await checked_enough.wait()
        assert receiver.drain() == [], "pinged while the root supervisor was not alive"

        alive = True
        assert set(await receive_pings(receiver, 2)) == {"WATCHDOG=1"}
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_watchdog_loop_returns_when_watchdog_disabled(receiver: NotifySocket) -> None:
    with anyio.fail_after(DEADLINE_S):
        await notify.watchdog_loop(lambda: True, env=receiver.env)  # no WATCHDOG_USEC
        other_pid = {**receiver.env, "WATCHDOG_USEC": "20000", "WATCHDOG_PID": "1"}
        await notify.watchdog_loop(lambda: True, env=other_pid)
    assert receiver.drain() == []


def test_watchdog_loop_in_a_child_process_as_systemd_starts_it(notify_socket) -> None:
    """WATCHDOG_PID is the main pid: the child pings; the pid check stays in place."""
    code = (
        "import anyio, os, sys\n"
        "from otgate.supervisors import notify\n"
        "os.environ['WATCHDOG_PID'] = str(os.getpid())  # systemd sets the main pid\n"
        "async def main():\n"
        "    with anyio.move_on_after(0.35):\n"
        "        await notify.watchdog_loop(lambda: True)\n"
        "anyio.run(main)\n"
    )
    env = {**os.environ, **notify_socket.env, "WATCHDOG_USEC": "200000"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=True)
    assert proc.returncode == 0
    pings = notify_socket.drain()
    assert len(pings) >= 2 and {p.raw for p in pings} == {"WATCHDOG=1"}
