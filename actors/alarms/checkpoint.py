"""The alarm evaluator's checkpoint: the alarm table, so a start need not read the
whole journal.

File ``<state_dir>/<actor id>.ckpt`` (msgpack, ``statefile.write_atomic``):
every alarm's facts (``EntryState``), the applied request ids and the raise
times the health windows still count. The journal records appended after
the file was written are those after the committed offset of the group
``<group>.journal``: the actor saves the file first and commits that group's
offset second, so a crash in between only folds a few records twice (folding
skips what the table already holds). A missing or unreadable file is no
error: the table is then rebuilt from the whole journal.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from otgate.actors.records import Value
from otgate.actors.statefile import write_atomic

if TYPE_CHECKING:
    from otgate.actors.alarms.machine import AlarmEntry

_FIELDS = (
    "seq", "occurrence_id", "active", "acked", "latched", "shelved_until", "shelved_since",
    "op_suppressed", "out_of_service", "raised_time", "cleared_time", "ack_time", "value",
    "message", "data_time", "unit",
)


class EntryState(msgspec.Struct, kw_only=True):
    """The facts of one alarm (``AlarmEntry``) as the checkpoint keeps them."""

    alarm_id: str
    definition: str
    asset_id: str
    parameter: str
    unit: str = ""
    seq: int = 0
    occurrence_id: str = ""
    active: bool = False
    acked: bool = True
    latched: bool = False
    shelved_until: int | None = None
    shelved_since: int | None = None
    op_suppressed: bool = False
    out_of_service: bool = False
    raised_time: int | None = None
    cleared_time: int | None = None
    ack_time: int | None = None
    value: Value | None = None
    message: str = ""
    data_time: int | None = None

    @classmethod
    def of(cls, e: AlarmEntry) -> EntryState:
        return cls(alarm_id=e.alarm_id, definition=e.defn.name, asset_id=e.asset_id,
                   parameter=e.parameter, **{f: getattr(e, f) for f in _FIELDS})

    def apply(self, e: AlarmEntry) -> None:
        for f in _FIELDS:
            setattr(e, f, getattr(self, f))


class AlarmCheckpoint(msgspec.Struct, kw_only=True):
    version: int = 1
    entries: list[EntryState] = []
    applied: list[str] = []
    raises: list[int] = []
    raises_per_alarm: dict[str, list[int]] = {}


def load(path: Path) -> AlarmCheckpoint | None:
    """The checkpoint, or None when there is none or it cannot be read."""
    try:
        return msgspec.msgpack.decode(path.read_bytes(), type=AlarmCheckpoint)
    except (OSError, msgspec.DecodeError):
        return None


def save(path: Path, checkpoint: AlarmCheckpoint) -> int:
    return write_atomic(path, msgspec.msgpack.encode(checkpoint))

