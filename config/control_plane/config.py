"""The ``[control_plane]`` section: where this gateway pulls its config from."""

from __future__ import annotations

from typing import Annotated

import msgspec

from otgate.config.base import Identifier, PositiveSeconds, StrictStruct

Url = Annotated[
    str,
    msgspec.Meta(pattern=r"^https?://[^\s/]+(/\S*)?$", description="http(s)://HOST[:PORT][/PATH]"),
]


class ControlPlaneSection(StrictStruct):
    """Pull this gateway's config from a control plane (see CONTROL_PLANE.md).

    This section is read from the local file only: a pulled config may not set
    it, so a control plane can never point the gateway elsewhere or lock it out.
    Changes to it take effect at the next start.
    """

    url: Url
    """Base URL of the control plane, e.g. ``https://cp.plant.example:8443``."""
    gateway_id: Identifier
    """This gateway's id at the control plane (``GET {url}/gateways/{gateway_id}/config``)."""
    token: str
    """Bearer token of this gateway; use a ``${secret:NAME}`` reference."""
    poll_interval: PositiveSeconds = 30.0
    """Seconds between pulls, jittered by up to 10 % so a fleet does not poll in step."""
    timeout: PositiveSeconds = 10.0
    """Whole-request timeout of a pull or a report, in seconds."""
    grace: PositiveSeconds | None = None
    """Seconds a pulled config is watched: the tree must become ready and the
    bulkheads it added or changed must stay up without a restart until then, or
    it is rolled back. Unset: ``[supervision] reload_grace_s``."""
    report_queue: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    """Outcome reports kept while the control plane is unreachable; when full, the
    oldest pending report is dropped (the newest outcome matters most)."""

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("token: must not be empty")
