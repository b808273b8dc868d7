"""Two-step confirmation of MCP action tools.

An action tool called without ``confirmation`` does nothing: it answers with
a preview and a one-time confirmation token bound to the tool, its exact
arguments and the MCP session that asked. Only a later call in the same
session, with the same arguments, within ``ttl_s``, executes; the token is
spent by that call whatever its outcome. A token that is unknown, expired,
spent, from another session or for other arguments is refused, and the
action is not done. So the proposal and its confirmation are never the same
call, and a confirmation cannot be moved to another action or session.

The book is bounded (``max_pending``): the oldest proposal is forgotten first.
"""

from __future__ import annotations

import collections
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import msgspec

DEFAULT_TTL_S = 120.0
MAX_PENDING = 256


class ConfirmationRefused(Exception):
    """The confirmation token does not confirm this call (see module doc)."""


class Pending(msgspec.Struct, frozen=True):
    tool: str
    arguments: str
    session: str
    expires_at: float
    bound: Any = None


def canonical(arguments: dict[str, Any]) -> str:
    """The arguments as one stable string (key order and spacing do not matter)."""
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)


class Confirmations:
    """Issued confirmation tokens (see module doc); ``clock`` is monotonic seconds."""

    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._clock = clock
        self._pending: collections.OrderedDict[str, Pending] = collections.OrderedDict()

    def issue(
        self, tool: str, arguments: dict[str, Any], session: str, bound: Any = None
    ) -> str:
        """A new token for ``tool(arguments)`` proposed in ``session``, carrying ``bound``."""
        token = secrets.token_urlsafe(12)
        self._pending[token] = Pending(
            tool, canonical(arguments), session, self._clock() + self.ttl_s, bound
        )
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
        return token

    def redeem(self, token: str, tool: str, arguments: dict[str, Any], session: str) -> Any:
        """Spend ``token`` for ``tool(arguments)`` in ``session`` and return what
        it was issued with (``bound``); raises ConfirmationRefused (with the
        reason) when it does not confirm it."""
        found = None
        for known in list(self._pending):  # constant-time compare, like bearer tokens
            if hmac.compare_digest(known.encode(), token.encode()):
                found = known
        if found is None:
            raise ConfirmationRefused("unknown or already used confirmation token")
        pending = self._pending.pop(found)
        if self._clock() > pending.expires_at:
            raise ConfirmationRefused(f"confirmation token expired (valid {self.ttl_s:g} s)")
        if pending.session != session:
            raise ConfirmationRefused("confirmation token was issued to another MCP session")
        if pending.tool != tool or pending.arguments != canonical(arguments):
            raise ConfirmationRefused(
                "confirmation token was issued for another action or other arguments"
            )
        return pending.bound
