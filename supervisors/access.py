"""Who may do what: roles, bearer tokens and the caller of an operator action.

Every operator surface (HTTP, CLI through HTTP, console, MCP) resolves its
caller here, so they share one permission check. Roles are ordered:
viewer < operator (+ ack alarms, restart components, approve DLQ) <
engineer (+ change rules, reload config, write setpoints) < admin.
Tokens are compared in constant time against every configured token and
never logged; a caller is known by the token's ``name``. A token can be
scoped to some assets (``assets``: fnmatch patterns): its caller sees and
acts on those assets' alarms and dead letters only (``in_scope``).
"""

from __future__ import annotations

import enum
import fnmatch
import hmac
from collections.abc import Sequence
from typing import Any

import msgspec


class Role(enum.Enum):
    """A caller's role, weakest first."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ENGINEER = "engineer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _ORDER.index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_ORDER = list(Role)
ROLE_NAMES = tuple(r.value for r in Role)


class Caller(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: the token's name and role, and where the call came from
    (``surface`` http | cli | console | mcp; ``source`` e.g. the peer address)."""

    name: str
    role: Role
    surface: str = "http"
    source: str = ""
    assets: tuple[str, ...] = ()
    """Asset patterns this caller is limited to (empty: every asset)."""

    def in_scope(self, asset_id: str) -> bool:
        """Whether this caller may see and act on ``asset_id``."""
        return not self.assets or any(fnmatch.fnmatchcase(asset_id, p) for p in self.assets)


class Unauthorized(Exception):
    """No valid token (HTTP 401)."""


class Forbidden(Exception):
    """A valid token whose role is too weak, or out of its scope (HTTP 403)."""

    def __init__(self, caller: Caller, needed: Role, text: str = "") -> None:
        super().__init__(text or f"role {caller.role.value} cannot do this; needs {needed.value}")
        self.caller = caller
        self.needed = needed


def require_scope(caller: Caller, assets: Sequence[str]) -> None:
    """Raise Forbidden when one of ``assets`` is out of ``caller``'s scope."""
    outside = sorted({a for a in assets if not caller.in_scope(a)})
    if outside:
        raise Forbidden(
            caller, caller.role, f"token {caller.name!r} is not scoped to asset {outside[0]!r}"
        )


def identify(
    tokens: Sequence[Any], presented: str, *, surface: str = "http", source: str = ""
) -> Caller:
    """The caller owning ``presented`` among ``tokens`` (objects with ``token``,
    ``role`` and ``name``). Raises Unauthorized when none matches."""
    given = presented.strip().encode()
    found = None
    for i, tok in enumerate(tokens):  # compare with every token, in constant time
        if hmac.compare_digest(given, tok.token.encode()) and given:
            found = (tok, i)
    if found is None:
        raise Unauthorized("a valid bearer token is required")
    tok, i = found
    return Caller(
        name=getattr(tok, "name", "") or f"token{i}-{tok.role}",
        role=Role(tok.role),
        surface=surface,
        source=source,
        assets=tuple(getattr(tok, "assets", ())),
    )


def require(caller: Caller, needed: Role) -> Caller:
    """``caller`` when its role is at least ``needed``; raises Forbidden otherwise."""
    if not caller.role.allows(needed):
        raise Forbidden(caller, needed)
    return caller
