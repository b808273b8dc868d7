"""Client error classification: what a failed read means and what to do next.

``classify(exc)`` maps what the pymodbus client raised to a ``Failure``;
``is_retriable`` is the whitelist of failures worth repeating the same
request for (only "server busy" / "acknowledge": the device asked us to come
back). Connection-level failures are not retried in place: the session
reconnects with backoff instead.
"""

from __future__ import annotations

import enum

from pymodbus.exceptions import ConnectionException, ModbusIOException

SERVER_BUSY = 6
ACKNOWLEDGE = 5
RETRIABLE_CODES = frozenset({SERVER_BUSY, ACKNOWLEDGE})
GATEWAY_PATH_UNAVAILABLE = 10
GATEWAY_TARGET_NO_RESPONSE = 11
UNIT_UNAVAILABLE_CODES = frozenset({GATEWAY_PATH_UNAVAILABLE, GATEWAY_TARGET_NO_RESPONSE})


class Failure(enum.Enum):
    """Why a read produced no values. Points of that read become BAD."""

    EXCEPTION = "exception"  # the device answered with an exception code
    UNIT_UNAVAILABLE = "unit_unavailable"  # a TCP gateway says the unit behind it is gone
    TIMEOUT = "timeout"  # no answer within the request's budget
    DISCONNECTED = "disconnected"  # transport closed / not connected / refused
    GARBAGE = "garbage"  # an answer that does not fit the request


def classify(exc: BaseException) -> Failure:
    """The failure kind of an exception raised by a read (or a connect)."""
    if isinstance(exc, TimeoutError):
        return Failure.TIMEOUT
    if isinstance(exc, ConnectionException | ConnectionError | OSError | EOFError):
        return Failure.DISCONNECTED
    if isinstance(exc, ModbusIOException):
        text = str(exc)
        if "No response" in text or "CLOSING CONNECTION" in text:
            return Failure.TIMEOUT
        return Failure.GARBAGE
    raise exc


def is_retriable(failure: Failure, exception_code: int | None = None) -> bool:
    """True only for answers that ask the client to repeat the same request."""
    return failure is Failure.EXCEPTION and exception_code in RETRIABLE_CODES


def exception_failure(code: int | None) -> Failure:
    """Exception codes 10/11 come from a gateway whose target unit is gone."""
    return Failure.UNIT_UNAVAILABLE if code in UNIT_UNAVAILABLE_CODES else Failure.EXCEPTION


def is_connection_fault(failure: Failure) -> bool:
    """True when the transport should be closed and reopened with backoff."""
    return failure is Failure.DISCONNECTED
