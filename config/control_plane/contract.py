"""The HTTP contract between a gateway and its control plane (CONTROL_PLANE.md),
shared by the gateway's client and the reference server."""

from __future__ import annotations

import enum

import msgspec

VERSION_HEADER = "OTgate-Config-Version"
"""Response header of a pulled config: the version the control plane serves it as."""
TOML_TYPE = "application/toml"


def config_path(gateway_id: str) -> str:
    return f"/gateways/{gateway_id}/config"


def reports_path(gateway_id: str) -> str:
    return f"/gateways/{gateway_id}/reports"


class ApplyStatus(enum.Enum):
    """What became of a config the gateway was asked to run."""

    APPLIED = "APPLIED"
    """Applied by diff and the tree was ready within the grace period; cached as last good."""
    REJECTED = "REJECTED"
    """Not applied: invalid, or its version is not higher than the running one."""
    ROLLED_BACK = "ROLLED_BACK"
    """Applied, not ready within the grace period, the previous config applied again."""


class Outcome(msgspec.Struct, frozen=True):
    """The result of one apply-confirm-rollback (a SIGHUP reload or a pulled config)."""

    status: ApplyStatus
    detail: str
    """What changed (``added=… changed=… removed=… unchanged=…``) or why it was refused."""
    errors: list[str] = []
    """``path: problem`` lines of a refused config; ``bulkhead: last error`` of a rollback."""


class Report(msgspec.Struct, frozen=True):
    """``POST /gateways/{id}/reports``: one outcome, sent once, retried until delivered."""

    id: str
    """Unique per outcome (a retried report keeps its id, so the server can drop repeats)."""
    gateway_id: str
    version: int
    """The ``config_version`` the control plane served."""
    status: ApplyStatus
    detail: str
    errors: list[str]
    at: float
    """Unix time of the outcome, at the gateway."""
    running_version: int
    """The version running after the outcome (the previous one after REJECTED/ROLLED_BACK)."""
