"""A TLS front for a plain TCP peer (tansu has no working TLS listener in 0.6):
clients speak TLS to the proxy, which forwards the bytes to the peer.

For Kafka, start the broker with ``--advertised-listener-url`` pointing at the
proxy's port, so the metadata sends clients back through the proxy.
"""

from __future__ import annotations

import asyncio
import ssl
from contextlib import suppress


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with suppress(Exception):
            writer.close()


class TlsProxy:
    def __init__(self, ssl_context: ssl.SSLContext, target_port: int, port: int = 0) -> None:
        self.ssl_context = ssl_context
        self.target_port = target_port
        self.port = port
        self.server: asyncio.Server | None = None
        self.tls_clients = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tls_clients += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                 ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
