"""A private Mosquitto broker on an ephemeral loopback port, as a real peer for tests.

The fixture starts its own ``mosquitto -c FILE`` (never the system broker on
1883, so tests are isolated) and stops it by PID. When the binary is missing
it tries ``apt-get install -y mosquitto`` once (root only) and skips the test
only if that fails. ``MosquittoPeer`` can stop and start the broker on the
same port (a broker restart), and can enable password authentication.

Usage::

    from peers.mosquitto import mosquitto_fixture  # noqa: F401

    async def test_x(mosquitto):
        ...  # mosquitto.port
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_install_tried = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_mosquitto() -> str | None:
    """The broker binary, installing the Debian package once if we may."""
    global _install_tried
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if not _install_tried and os.geteuid() == 0 and shutil.which("apt-get"):
        _install_tried = True
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "mosquitto"],
            check=False,
            capture_output=True,
            timeout=600,
        )
        for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
            if candidate and os.access(candidate, os.X_OK):
                return candidate
    return None


class MosquittoPeer:
    """One private mosquitto process at a time on a fixed loopback port."""

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.users: dict[str, str] | None = None
        self.extra_config: list[str] = []
        self.tls: dict[str, str] | None = None  # from make_tls(): the listener speaks TLS only

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "max_queued_messages 100000",
            # Started as root, mosquitto would drop to user "mosquitto", which
            # cannot read files in pytest's private tmp dirs.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
        ]
        if self.users is None:
            lines.append("allow_anonymous true")
        else:
            pwfile = self.workdir / "passwd"
            pwfile.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(pwfile), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls['ca']}",
                f"certfile {self.tls['cert']}",
                f"keyfile {self.tls['key']}",
            ]
        lines += self.extra_config
        path = self.workdir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 10.0) -> None:
        conf = self._write_config()
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "mosquitto.log", "ab"),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                log = (self.workdir / "mosquitto.log").read_text(errors="replace")
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {log[-500:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto did not listen on {self.port}") from None
                time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def kill(self) -> None:
        """Abrupt broker death (SIGKILL): no DISCONNECT reaches the clients."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()


def make_tls(directory: Path) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1 (PEM files); returns their paths."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("otgate test CA"))
        .issuer_name(name("otgate test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {
        "ca": directory / "ca.pem",
        "cert": directory / "server.pem",
        "key": directory / "server-key.pem",
    }
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return {k: str(v) for k, v in paths.items()}


def start_peer(tmp_path: Path, **attrs: object) -> MosquittoPeer:
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed and could not be installed")
    peer = MosquittoPeer(binary, tmp_path)
    for name, value in attrs.items():
        setattr(peer, name, value)
    peer.start()
    return peer


@pytest.fixture(name="mosquitto")
def mosquitto_fixture(tmp_path: Path) -> Iterator[MosquittoPeer]:
    peer = start_peer(tmp_path)
    try:
        yield peer
    finally:
        peer.stop()
