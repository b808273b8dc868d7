"""The outcome of delivering one batch to a sink destination (Vector's EventStatus).

A sink commits its log offsets only for ``DELIVERED`` records; ``ERRORED``
leaves them uncommitted so the log keeps them and they are retried;
``REJECTED`` records can never be written (bad data) and go to a dead-letter
topic, after which their offsets are committed too.
"""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    """What happened to a batch (or one record) at the destination."""

    DELIVERED = "delivered"  # the destination confirmed it durably; commit
    ERRORED = "errored"  # transient failure (retriable); keep it in the log, retry
    REJECTED = "rejected"  # permanent failure for this data; dead-letter it, commit


Delivered = Outcome.DELIVERED
Errored = Outcome.ERRORED
Rejected = Outcome.REJECTED
