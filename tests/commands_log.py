"""Test helper: write requests onto a real embedded log (as the gateway root
does) and read their results back, for session-level write tests."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio

from otgate.actors.context import BuildContext
from otgate.actors.log.config import LogConfig
from otgate.actors.log.open import decoder, open_log, schema_store
from otgate.actors.log.publisher import Codec
from otgate.actors.records import CommandRequest, CommandResult, CommandStatus, now_ns


class CommandLog:
    """An embedded log in ``state_dir`` with the request/result topics.

    Set ``nudge`` to a session to wake its write runner after each request, as
    the gateway root's nudge does (else it finds them by polling)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.nudge = None
        self.cfg = LogConfig()
        self.log = None
        self.codec: Codec | None = None

    async def __aenter__(self) -> CommandLog:
        self.log = await open_log(self.cfg, self.state_dir)
        self.codec = Codec(schema_store(self.cfg, self.state_dir, self.log))
        await self.codec.prepare("commands.requests")
        self.dec = decoder(self.cfg, self.state_dir, self.log)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.log.close()

    def context(self, publish) -> BuildContext:
        return BuildContext(
            gateway_id="gw", publish=publish, state_dir=self.state_dir, log=self.log,
            extras={"schemas": schema_store(self.cfg, self.state_dir, self.log)},
        )

    async def request(
        self, adapter_id: str, asset: str, parameter: str, value, *,
        deadline_s: float = 5.0, role: str = "engineer",
    ) -> str:
        rid = uuid.uuid4().hex
        req = CommandRequest(
            request_id=rid, adapter_id=adapter_id, asset_id=asset, parameter=parameter,
            value=value, deadline=now_ns() + int(deadline_s * 1e9), by="test", role=role,
            gateway_time=now_ns(),
        )
        enc = self.codec.encode("commands.requests", req)
        await self.log.append("commands.requests", [(adapter_id.encode(), enc)])
        if self.nudge is not None:
            self.nudge.commands.wake()
        return rid

    async def results(self, request_id: str | None = None) -> list[CommandResult]:
        out = []
        for partition, (start, end) in (await self.log.watermarks("commands.results")).items():
            for rec in await self.log.read("commands.results", partition, start, end - start):
                r = await self.dec.decode_async("commands.results", rec.value)
                if request_id is None or r.request_id == request_id:
                    out.append(r)
        return out

    async def final(self, request_id: str, timeout: float = 10.0) -> CommandResult:
        """The first final (non-ACCEPTED) result of ``request_id``."""
        with anyio.fail_after(timeout):
            while True:
                for r in await self.results(request_id):
                    if r.status is not CommandStatus.ACCEPTED:
                        return r
                await anyio.sleep(0.02)
