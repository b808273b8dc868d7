"""Errors an operator action raises for its caller, with the HTTP status a
surface maps them to (401/403 come from ``access.Unauthorized``/``Forbidden``)."""

from __future__ import annotations


class ServiceError(Exception):
    """An operator action refused for a reason the caller can fix."""

    status = 400


class BadRequest(ServiceError):
    """Malformed arguments (HTTP 400)."""

    status = 400


class NotFound(ServiceError):
    """The alarm / dead letter named does not exist (HTTP 404)."""

    status = 404


class Unavailable(ServiceError):
    """The gateway cannot do it now (stopping, supervisor gone): HTTP 503."""

    status = 503
