"""Length-prefixed msgspec frames over a socketpair: the bulkhead control channel.

The two ends are created with ``socket.socketpair()`` before the bulkhead
process starts and inherited by it, so nothing listens anywhere: no other
process, local or remote, can reach a bulkhead's control channel. Only
control messages (``ControlMessage``) cross it; data goes through the log.
"""

from __future__ import annotations

import socket
import struct

import anyio
import msgspec
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from otgate.actors.messages import ControlMessage

MAX_FRAME = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ChannelClosed(Exception):
    """The other end closed the channel (its process exited)."""


class Channel:
    def __init__(self, stream: SocketStream) -> None:
        self._stream = stream
        self._reader = BufferedByteReceiveStream(stream)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(ControlMessage)
        self._send_lock = anyio.Lock()

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> Channel:
        sock.setblocking(False)
        return cls(await anyio.abc.UNIXSocketStream.from_socket(sock))

    async def send(self, message: ControlMessage) -> None:
        body = self._encoder.encode(message)
        async with self._send_lock:
            try:
                await self._stream.send(_HEADER.pack(len(body)) + body)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                raise ChannelClosed(str(exc)) from exc

    async def receive(self) -> ControlMessage:
        try:
            (size,) = _HEADER.unpack(await self._reader.receive_exactly(_HEADER.size))
            if size > MAX_FRAME:
                raise ChannelClosed(f"frame of {size} bytes exceeds {MAX_FRAME}")
            body = await self._reader.receive_exactly(size)
        except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
            raise ChannelClosed("peer closed the control channel") from exc
        try:
            return self._decoder.decode(body)
        except msgspec.MsgspecError as exc:
            # Both ends are ours: a frame that does not decode means a broken channel.
            raise ChannelClosed(f"malformed control frame: {exc}") from exc

    async def aclose(self) -> None:
        await self._stream.aclose()
