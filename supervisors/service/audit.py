"""Permission check plus audit, shared by every operator action.

A refused call is audited too (result ``refused``): who tried what is part of
the trail. A call without a valid token has no caller; ``unauthenticated``
audits it by surface and source only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from otgate.actors.records import AuditRecord, now_ns
from otgate.supervisors.access import Caller, Forbidden, Role, require
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.errors import ServiceError

log = logging.getLogger("otgate.oplog")


async def authorize(
    oplog: OperatorLog,
    caller: Caller,
    needed: Role,
    action: str,
    target: str = "",
    request_id: str = "",
) -> None:
    """Return when ``caller`` may do ``action``; audit and raise Forbidden otherwise."""
    async with audit_refusals(oplog, caller, action, target, request_id):
        require(caller, needed)


@contextlib.asynccontextmanager
async def audit_refusals(
    oplog: OperatorLog, caller: Caller, action: str, target: str, request_id: str = ""
) -> AsyncIterator[None]:
    """Audit what the block refuses and re-raise it: Forbidden (role or asset
    scope) as ``refused``, a ServiceError as ``error: ...``."""
    try:
        yield
    except Forbidden as exc:
        await oplog.audit(
            caller, action, target, result="refused", detail=str(exc), request_id=request_id
        )
        raise
    except ServiceError as exc:
        await oplog.audit(caller, action, target, result=f"error: {exc}", request_id=request_id)
        raise


async def unauthenticated(oplog: OperatorLog, action: str, surface: str, source: str) -> None:
    """Audit a mutating call that came without a valid token (HTTP 401)."""
    log.warning(
        "operator_action who= surface=%s source=%s action=%s result=refused",
        surface,
        source,
        action,
    )
    rec = AuditRecord(
        who="",
        source=source,
        surface=surface,
        action=action,
        result="refused",
        detail="no valid token",
        gateway_time=now_ns(),
    )
    await oplog.append("logs.audit", "-", rec)
