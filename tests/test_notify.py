"""sd_notify client against a real unix datagram socket (path and abstract)."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import anyio
import pytest
from otgate.supervisors import notify

DEADLINE_S = 5.0


class Receiver:
    """A bound AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value
        self.env = {"NOTIFY_SOCKET": env_value}
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

    def recv(self, timeout: float = DEADLINE_S) -> tuple[str, int]:
        """One datagram and the sender's pid (from SCM_CREDENTIALS, as PID 1 sees it)."""
        self.sock.settimeout(timeout)
        data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = -1
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = struct.unpack("iII", payload[:12])
        return data.decode(), pid

    def drain(self) -> list[str]:
        """Every datagram already queued, without waiting."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return out
        finally:
            self.sock.setblocking(True)


@pytest.fixture
def path_receiver() -> Iterator[Receiver]:
    # A short directory: sun_path is limited to 108 bytes, pytest's tmp_path can be longer.
    directory = tempfile.mkdtemp(prefix="otg-notify-", dir="/tmp")
    path = os.path.join(directory, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield Receiver(sock, path)
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"otgate-test-{os.getpid()}-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        yield Receiver(sock, "@" + name)
    finally:
        sock.close()


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, path_receiver, abstract_receiver) -> Receiver:
    return path_receiver if request.param == "path" else abstract_receiver


def test_ready_watchdog_stopping_arrive_from_this_process(receiver: Receiver) -> None:
    assert notify.ready(receiver.env) is True
    assert receiver.recv() == ("READY=1", os.getpid())
    assert notify.watchdog(receiver.env) is True
    assert receiver.recv() == ("WATCHDOG=1", os.getpid())
    assert notify.stopping(receiver.env) is True
    assert receiver.recv() == ("STOPPING=1", os.getpid())


def test_status_is_one_line_and_reloading_carries_monotonic_time(receiver: Receiver) -> None:
    notify.status("3 of 4 bulkheads\nrunning", receiver.env)
    assert receiver.recv()[0] == "STATUS=3 of 4 bulkheads running"

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notify.reloading(receiver.env)
    lines = receiver.recv()[0].split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_reads_notify_socket_from_the_process_environment(
    path_receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_receiver.env_value)
    assert notify.ready() is True
    assert path_receiver.recv()[0] == "READY=1"


def test_another_process_with_the_inherited_environment_can_notify(
    abstract_receiver: Receiver,
) -> None:
    """What `otgate run` does under systemd: the env var is all it needs."""
    env = {**os.environ, **abstract_receiver.env}
    proc = subprocess.run(
        [sys.executable, "-c", "from otgate.supervisors import notify; notify.ready()"],
        env=env,
        timeout=60,
        check=True,
    )
    assert proc.returncode == 0
    message, pid = abstract_receiver.recv()
    assert message == "READY=1"
    assert pid > 0 and pid != os.getpid()


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


async def receive_pings(receiver: Receiver, n: int) -> list[str]:
    """Wait (bounded) until ``n`` datagrams have arrived; return them all."""
    received: list[str] = []
    with anyio.fail_after(DEADLINE_S):
        while len(received) < n:
            await anyio.wait_readable(receiver.sock)
            received.extend(receiver.drain())
    return received


@pytest.mark.anyio
async def test_watchdog_loop_pings_only_while_alive(receiver: Receiver) -> None:
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
async def test_watchdog_loop_returns_when_watchdog_disabled(receiver: Receiver) -> None:
    with anyio.fail_after(DEADLINE_S):
        await notify.watchdog_loop(lambda: True, env=receiver.env)  # no WATCHDOG_USEC
        other_pid = {**receiver.env, "WATCHDOG_USEC": "20000", "WATCHDOG_PID": "1"}
        await notify.watchdog_loop(lambda: True, env=other_pid)
    assert receiver.drain() == []
