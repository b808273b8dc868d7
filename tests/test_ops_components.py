"""Component restart as a service action: role, asset scope, unknown ids, audit."""

from __future__ import annotations

import pytest

from otgate.actors.log.config import LogConfig
from otgate.supervisors.access import Caller, Forbidden, Role
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.components import ComponentService
from otgate.supervisors.service.errors import NotFound, Unavailable
from otgate.supervisors.service.tail import scan
from otgate.supervisors.supervisor import SupervisorStopped


@pytest.mark.anyio
async def test_restart_checks_role_and_scope_and_audits_every_outcome(tmp_path) -> None:
    restarted: list[str] = []

    async def restart(cid: str) -> str:
        if cid == "gone":
            raise SupervisorStopped("the root supervisor is stopping")
        if cid != "plc-1":
            raise KeyError(cid)
        restarted.append(cid)
        return "restarted"

    oplog = OperatorLog(LogConfig(), tmp_path)
    try:
        svc = ComponentService(oplog, restart)
        with pytest.raises(Forbidden, match="needs operator"):
            await svc.restart(Caller(name="vic", role=Role.VIEWER), "plc-1")
        with pytest.raises(Forbidden, match="scoped to assets"):
            await svc.restart(Caller(name="sam", role=Role.ADMIN, assets=("fan-*",)), "plc-1")
        assert restarted == []
        olga = Caller(name="olga", role=Role.OPERATOR)
        with pytest.raises(NotFound):
            await svc.restart(olga, "nope")
        with pytest.raises(Unavailable):
            await svc.restart(olga, "gone")
        assert await svc.restart(olga, "plc-1") == "restarted" and restarted == ["plc-1"]
        audit = [(a.who, a.target, a.result) async for _r, a in scan(oplog, "logs.audit")]
        assert audit == [
            ("vic", "plc-1", "refused"),
            ("sam", "plc-1", "refused"),
            ("olga", "nope", "error: unknown"),
            ("olga", "gone", "error: the root supervisor is stopping"),
            ("olga", "plc-1", "ok"),
        ]
    finally:
        await oplog.close()
