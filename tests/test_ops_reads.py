"""The read services on a real embedded log: the config without its secrets,
schemas, the most recent log records, and a surface's audit notes."""

from __future__ import annotations

import pytest

from otgate.actors.log.config import LogConfig
from otgate.actors.records import AuditRecord
from otgate.config.load import Loaded, load_config
from otgate.supervisors.access import Caller, Role
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.errors import BadRequest, NotFound
from otgate.supervisors.service.reads import ReadService
from otgate.supervisors.service.tail import scan

CONFIG = """
[gateway]
id = "reads"
[status]
tokens = [
  { token = "${secret:viewer}", role = "viewer", name = "vic" },
  { token = "plain-operator-token", role = "operator", name = "olga" },
]
[[adapters]]
type = "synthetic"
id = "a"
asset_id = "pump-1"
interval = 1.0
points = [{ parameter = "flow", signal = { kind = "sine" } }]
"""


@pytest.mark.anyio
async def test_reads_hide_secrets_tail_logs_and_audit_notes(tmp_path) -> None:
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "viewer").write_text("viewer-secret-value")
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG)
    loaded: Loaded = load_config(path, env={"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
    oplog = OperatorLog(LogConfig(), tmp_path / "state")
    vic = Caller(name="vic", role=Role.VIEWER, surface="mcp")
    try:
        svc = ReadService(oplog, lambda: loaded)
        shown = await svc.config(vic)
        assert shown["config"]["status"]["tokens"][0]["token"] == "***"
        assert "viewer-secret-value" not in repr(shown) and "plain-operator" not in repr(shown)
        assert shown["config"]["adapters"][0]["interval"] == 1.0

        assert set(await svc.schemas(vic)) >= {"telemetry.raw", "logs.audit", "dlq.telemetry"}
        with pytest.raises(NotFound):
            await svc.schemas(vic, "telemetry.nope")

        for i in range(12):
            rec = AuditRecord(who=f"w{i}", action="x", gateway_time=i + 1)
            await oplog.append("logs.audit", "k", rec)
        await svc.note(vic, "gateway_status", result="ok")
        recent = await svc.recent(vic, "logs.audit", 3)
        assert [(r["who"], r["action"]) for r in recent[:2]] == [("w10", "x"), ("w11", "x")]
        assert (recent[2]["who"], recent[2]["action"]) == ("vic", "mcp.gateway_status")
        assert recent[2]["offset"] == 12
        with pytest.raises(BadRequest, match="expected one of"):
            await svc.recent(vic, "telemetry.raw", 3)
        with pytest.raises(BadRequest, match="limit"):
            await svc.recent(vic, "logs.audit", 0)
        with pytest.raises(BadRequest, match="name"):
            await svc.note(vic, "alarms.ack")  # a note cannot pose as an action
        notes = [a async for _r, a in scan(oplog, "logs.audit") if a.who == "vic"]
        assert [(a.surface, a.action, a.role) for a in notes] == [
            ("mcp", "mcp.gateway_status", "viewer")
        ]
    finally:
        await oplog.close()
