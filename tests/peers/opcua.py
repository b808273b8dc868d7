"""An asyncua Server on an ephemeral loopback port, as a real peer for tests.

``OpcUaPeer`` owns one server at a time and can stop it and start a brand-new
server on the same port (a "server restart": every session and subscription
is forgotten). Variables live under ``ns=2;s=<name>``.

Usage::

    from peers.opcua import opcua_server_fixture  # noqa: F401

    async def test_x(opcua_server):
        await opcua_server.write("Temp", 21.5)
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import Server, ua

NS_URI = "urn:otgate:test"
DEFAULT_VARS: dict[str, Any] = {
    "Temp": 20.0,
    "Pressure": 1.5,
    "Count": 0,
    "Running": False,
    "Alarm": False,
    "Name": "pump-1",
}

logging.getLogger("asyncua").setLevel(logging.ERROR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OpcUaPeer:
    """One asyncua server at a time on a fixed loopback port."""

    def __init__(self, variables: dict[str, Any] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"opc.tcp://127.0.0.1:{self.port}/otgate/"
        self.variables = dict(variables or DEFAULT_VARS)
        self.server: Server | None = None
        self.nodes: dict[str, Any] = {}
        self.users: dict[str, str] | None = None
        self.disable_subscriptions = False
        self.secure_dir: Path | None = None  # set by make_certificates(): encrypted only

    async def make_certificates(self, directory: Path) -> dict[str, str]:
        """Self-signed server and client certificates; the server then offers
        only Basic256Sha256 SignAndEncrypt. Returns the client's file paths."""
        from asyncua.crypto.cert_gen import setup_self_signed_certificate
        from cryptography.x509.oid import ExtendedKeyUsageOID

        self.secure_dir = directory
        for role, uri, usage in (
            ("server", "urn:otgate:test:server", ExtendedKeyUsageOID.SERVER_AUTH),
            ("client", "urn:otgate:client", ExtendedKeyUsageOID.CLIENT_AUTH),
        ):
            await setup_self_signed_certificate(
                directory / f"{role}-key.pem",
                directory / f"{role}-cert.der",
                uri,
                socket.gethostname(),
                [usage],
                {"commonName": f"otgate test {role}"},
            )
        return {
            "certificate": str(directory / "client-cert.der"),
            "private_key": str(directory / "client-key.pem"),
        }

    def node_id(self, name: str) -> str:
        return f"ns=2;s={name}"

    async def start(self) -> None:
        server = Server()
        if self.users is not None:
            from asyncua.crypto.permission_rules import User, UserRole
            from asyncua.server.user_managers import UserManager

            users = self.users

            class _Users(UserManager):
                def get_user(self, iserver, username=None, password=None, certificate=None):
                    if username is not None and users.get(username) == password:
                        return User(role=UserRole.User)
                    return None

            server = Server(user_manager=_Users())
            server.set_identity_tokens([ua.UserNameIdentityToken])
        await server.init()
        server.set_endpoint(self.url)
        if self.secure_dir is not None:
            await server.set_application_uri("urn:otgate:test:server")
            await server.load_certificate(str(self.secure_dir / "server-cert.der"))
            await server.load_private_key(str(self.secure_dir / "server-key.pem"))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        idx = await server.register_namespace(NS_URI)
        assert idx == 2, idx
        objects = server.nodes.objects
        folder = await objects.add_object(ua.NodeId("Plant", idx), "Plant")
        self.nodes = {}
        for name, value in self.variables.items():
            var = await folder.add_variable(ua.NodeId(name, idx), name, value)
            await var.set_writable()
            self.nodes[name] = var
        if self.disable_subscriptions:
            _refuse_subscriptions(server)
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def write(
        self,
        name: str,
        value: Any,
        *,
        status: int = ua.StatusCodes.Good,
        source_time: datetime | None = None,
    ) -> None:
        """Set a variable's value, status code and source timestamp on the server."""
        assert self.server is not None
        node = self.nodes[name]
        vtype = await node.read_data_type_as_variant_type()
        dv = ua.DataValue(
            ua.Variant(value, vtype) if value is not None else ua.Variant(),
            StatusCode=ua.StatusCode(status),
            SourceTimestamp=source_time or datetime.now(UTC),
            ServerTimestamp=datetime.now(UTC),
        )
        await self.server.write_attribute_value(node.nodeid, dv)


def _refuse_subscriptions(server: Server) -> None:
    """Make this server answer CreateSubscription with BadServiceUnsupported,
    like embedded servers without the subscription service set."""

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ua.UaStatusCodeError(ua.StatusCodes.BadServiceUnsupported)

    server.iserver.subscription_service.create_subscription = refuse  # type: ignore[method-assign]


@pytest.fixture(name="opcua_server")
async def opcua_server_fixture() -> AsyncIterator[OpcUaPeer]:
    peer = OpcUaPeer()
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()
