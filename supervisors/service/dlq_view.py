"""Naming, selecting and showing dead letters (the read side of the DLQ workflow).

A dead letter is named by where it sits: ``<dlq topic>/<partition>/<offset>``
(e.g. ``dlq.telemetry/0/12``); that name is also the key of its disposition
records on ``dlq.dispositions``.
"""

from __future__ import annotations

import fnmatch

import msgspec

from otgate.actors.records import DeadLetter, DispositionRecord, DlqDisposition
from otgate.supervisors.service.errors import BadRequest

DLQ_TOPICS = ("dlq.telemetry", "dlq.events")


def letter_id(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


def parse_id(text: str) -> tuple[str, int, int]:
    """``(topic, partition, offset)`` of a dead letter's name; BadRequest otherwise."""
    topic, _, rest = text.partition("/")
    part, _, offset = rest.partition("/")
    if topic not in DLQ_TOPICS or not part.isdigit() or not offset.isdigit():
        raise BadRequest(
            f"{text!r}: expected <topic>/<partition>/<offset> with topic one of "
            f"{', '.join(DLQ_TOPICS)}"
        )
    return topic, int(part), int(offset)


def clean_topic(dlq_topic: str) -> str:
    """Where a dead letter of ``dlq_topic`` goes once it passes: ``dlq.x`` → ``x.clean``."""
    return f"{dlq_topic.removeprefix('dlq.')}.clean"


def identity(reading: object) -> tuple:
    """What names one session read (the validator may change quality and
    device_time, never these): a reprocessed reading is found by it."""
    return tuple(
        getattr(reading, f) for f in ("asset_id", "parameter", "gateway_time", "seq", "adapter_id")
    )


class DlqFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which dead letters: every field given must match (empty = any).

    ``reason`` is a prefix (``out_of_range`` matches ``out_of_range [0.0, 10.0]``),
    ``asset``/``parameter`` are fnmatch patterns, ``since_ns``/``until_ns``
    bound the time the letter was written, ``dispositions`` lists states.
    """

    topics: tuple[str, ...] = DLQ_TOPICS
    reason: str = ""
    asset: str = ""
    parameter: str = ""
    since_ns: int | None = None
    until_ns: int | None = None
    dispositions: tuple[DlqDisposition, ...] = ()

    def __post_init__(self) -> None:
        for t in self.topics:
            if t not in DLQ_TOPICS:
                raise BadRequest(f"topic {t!r}: expected one of {', '.join(DLQ_TOPICS)}")

    def matches(self, letter: DeadLetter, state: DlqDisposition) -> bool:
        r = letter.reading
        return (
            (not self.reason or letter.reason.startswith(self.reason))
            and (not self.asset or fnmatch.fnmatchcase(r.asset_id, self.asset))
            and (not self.parameter or fnmatch.fnmatchcase(r.parameter, self.parameter))
            and (self.since_ns is None or letter.gateway_time >= self.since_ns)
            and (self.until_ns is None or letter.gateway_time < self.until_ns)
            and (not self.dispositions or state in self.dispositions)
        )


class LetterView(msgspec.Struct, frozen=True, kw_only=True):
    """One dead letter with its current disposition (``reason`` in the
    disposition is the latest refusal, when a reprocess was refused again)."""

    id: str
    letter: DeadLetter
    disposition: DlqDisposition
    last: DispositionRecord | None = None


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a reprocess or discard did to one dead letter.

    ``result``: ``reprocessed`` (now in ``clean_topic``), ``refused`` (the
    current rules still refuse it: ``reason``), ``discarded``, ``unchanged``
    (already reprocessed or discarded: nothing written), ``resumed`` (an
    interrupted reprocess finished without writing the reading twice),
    ``duplicate`` (another letter of the same source record was reprocessed:
    marked REPROCESSED, nothing written).
    """

    id: str
    result: str
    reason: str = ""
    clean_topic: str = ""


MAX_OUTCOMES = 1000
"""Outcomes listed in one answer; ``counts`` always covers every letter."""


class BulkResult(msgspec.Struct, frozen=True, kw_only=True):
    """Outcomes of one reprocess / discard call, with counts per result (the
    first ``MAX_OUTCOMES`` outcomes are listed, ``omitted`` says how many not)."""

    request_id: str
    counts: dict[str, int]
    outcomes: list[Outcome]
    omitted: int = 0
