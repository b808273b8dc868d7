"""The services of one gateway root, shared by every surface (``Gateway.ops``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

from otgate.actors.log import embedded, kafka
from otgate.actors.validator.config import ValidatorConfig
from otgate.config.schema import GatewayConfig
from otgate.supervisors.oplog import OperatorLog
from otgate.supervisors.service.alarms import AlarmService
from otgate.supervisors.service.components import ComponentService
from otgate.supervisors.service.dlq import DlqService

log = logging.getLogger("otgate.service")


def validator_rules(cfg: GatewayConfig) -> ValidatorConfig:
    """The validator config in force (defaults when ``[processing]`` is absent)."""
    return cfg.processing.validator if cfg.processing is not None else ValidatorConfig()


class Operations:
    """Alarm, DLQ and component services on the root's operator log; ``config``
    returns the config in force (it changes on reload), ``restart`` is the
    root's bulkhead restart."""

    def __init__(
        self,
        oplog: OperatorLog,
        config: Callable[[], GatewayConfig],
        restart: Callable[[str], Awaitable[str]],
    ) -> None:
        self.oplog = oplog
        self.alarms = AlarmService(oplog)
        self.dlq = DlqService(oplog, lambda: validator_rules(config()))
        self.components = ComponentService(oplog, restart)

    async def follow(self, every_s: float = 1.0) -> None:
        """Keep the alarm table current for ``/metrics`` (actions refresh it
        themselves). A log that is down is retried; a permanent error stops
        following (the table keeps its last state and the error is logged)."""
        while True:
            try:
                await self.alarms.table.refresh()
            except Exception as exc:
                if not (
                    embedded.is_retriable(exc)
                    or kafka.is_retriable(exc)
                    or isinstance(exc, OSError)
                ):
                    log.error("alarm_table_stopped error=%s", f"{type(exc).__name__}: {exc}")
                    return
                log.warning("alarm_table_retry error=%s", type(exc).__name__)
            await anyio.sleep(every_s)
