"""The operator service layer: one function per operator action, behind every
surface (HTTP routes, the CLI through HTTP, later the console and MCP).

Each function takes the ``Caller`` (supervisors/access.py), checks its role,
does the action through the log and writes the audit record, so the surfaces
only translate requests and errors (``ServiceError.status``).
"""

from otgate.supervisors.service.errors import BadRequest, NotFound, ServiceError

__all__ = ["BadRequest", "NotFound", "ServiceError"]
