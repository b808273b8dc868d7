"""Component actions: restart a bulkhead (operator)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from otgate.supervisors.access import Caller, Forbidden, Role
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.audit import authorize
from otgate.supervisors.service.errors import NotFound, Unavailable
from otgate.supervisors.supervisor import SupervisorStopped


class ComponentService:
    """``restart`` calls the gateway root's own restart (KeyError: no such bulkhead)."""

    def __init__(self, oplog: OperatorLog, restart: Callable[[str], Awaitable[str]]) -> None:
        self.oplog = oplog
        self._restart = restart

    async def restart(self, caller: Caller, component: str) -> str:
        """Restart one bulkhead now; returns what the supervisor did."""
        await authorize(self.oplog, caller, Role.OPERATOR, "component.restart", component)
        if caller.assets:  # a component serves many assets
            exc = Forbidden(
                caller, Role.OPERATOR, "a token scoped to assets cannot restart components"
            )
            await self.oplog.audit(
                caller, "component.restart", component, result="refused", detail=str(exc)
            )
            raise exc
        try:
            result = await self._restart(component)
        except KeyError:
            await self.oplog.audit(caller, "component.restart", component, result="error: unknown")
            raise NotFound(f"no bulkhead {component!r}") from None
        except SupervisorStopped as exc:
            await self.oplog.audit(caller, "component.restart", component, result=f"error: {exc}")
            raise Unavailable(str(exc)) from None
        await self.oplog.audit(caller, "component.restart", component, detail=result)
        return result
