"""``otgate log topics|read|groups|drop-group``: operator access to the log.

``topics`` and ``read`` work on either backend, while the gateway runs and
after it died: they only read (embedded: a separate SQLite connection, which sees every committed
record; kafka: a group-less consumer, so no offsets are committed and no group
is left behind). Values are decoded with the schema table / registry cache.
``groups`` and ``drop-group`` (embedded log) show and forget consumer groups'
committed offsets: retention never deletes past a group's offset, so a group
that no longer runs (a removed sink) would hold its topics for ever.

The command functions take a ``LogConfig`` and a state dir
(``topics_rows``, ``read_rows``) so tests and other tools can call them
without a gateway config file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec

from otgate.actors.log.config import Backend, LogConfig
from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.open import make_log, resolve, schema_store
from otgate.actors.log.publisher import Decoder
from otgate.actors.log.topics import TOPICS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("log", help="list topics and read records of the durable log")
    lsub = p.add_subparsers(dest="log_command", required=True, metavar="SUBCOMMAND")

    t = lsub.add_parser("topics", help="topics with partitions, retention and record counts")
    t.add_argument("--config", required=True, help="gateway config file (TOML)")
    t.add_argument("--json", action="store_true", help="one JSON object per topic and line")
    t.set_defaults(func=_topics_cmd)

    r = lsub.add_parser("read", help="decode records of one topic")
    r.add_argument("topic")
    r.add_argument("--config", required=True, help="gateway config file (TOML)")
    r.add_argument(
        "--from",
        dest="from_offset",
        type=int,
        default=0,
        help="first offset to read in each partition (default 0)",
    )
    r.add_argument("--limit", type=int, default=100, help="most records to print (default 100)")
    r.add_argument("--partition", type=int, default=None, help="only this partition")
    r.add_argument("--json", action="store_true", help="one JSON object per record and line")
    r.set_defaults(func=_read_cmd)

    g = lsub.add_parser("groups", help="consumer groups: committed offset and lag per partition")
    g.add_argument("--config", required=True, help="gateway config file (TOML)")
    g.add_argument("--json", action="store_true", help="one JSON object per partition and line")
    g.set_defaults(func=_groups_cmd)

    d = lsub.add_parser(
        "drop-group",
        help="forget a consumer group's offsets (a removed sink's group holds its topics)",
    )
    d.add_argument("group")
    d.add_argument("--config", required=True, help="gateway config file (TOML)")
    d.set_defaults(func=_drop_group_cmd)


def _load(path: str) -> tuple[LogConfig, Path]:
    from otgate.config.load import ConfigError, load_config  # imported lazily

    try:
        loaded = load_config(Path(path))
    except ConfigError as e:
        raise SystemExit(f"otgate log: {e}") from None
    cfg = getattr(loaded, "config", loaded)
    return cfg.log, Path(cfg.gateway.state_dir)


def _topics_cmd(args: argparse.Namespace) -> int:
    cfg, state_dir = _load(args.config)
    rows = anyio.run(topics_rows, cfg, state_dir)
    _print(rows, args.json, "(no topics)")
    return 0


def _read_cmd(args: argparse.Namespace) -> int:
    cfg, state_dir = _load(args.config)
    rows = anyio.run(
        read_rows, cfg, state_dir, args.topic, args.from_offset, args.limit, args.partition
    )
    _print(rows, args.json)
    return 0


def _embedded(cfg: LogConfig, state_dir: Path) -> EmbeddedLog:
    log = _reader(cfg, state_dir)
    if not isinstance(log, EmbeddedLog):
        raise SystemExit("otgate log: groups live in the broker on the Kafka backend; use its"
                         " tools (rpk group list / delete)")
    return log


def _groups_cmd(args: argparse.Namespace) -> int:
    cfg, state_dir = _load(args.config)
    rows = [
        {"group": g, "topic": t, "partition": p, "committed": c, "lag": n - c}
        for g, t, p, c, n in anyio.run(_embedded(cfg, state_dir).groups)
    ]
    _print(rows, args.json, "(no consumer groups)")
    return 0


def _drop_group_cmd(args: argparse.Namespace) -> int:
    cfg, state_dir = _load(args.config)
    n = anyio.run(_embedded(cfg, state_dir).drop_group, args.group)
    if not n:
        print(f"otgate log: no group {args.group!r}", file=sys.stderr)
        return 1
    print(f"dropped group {args.group} ({n} partition offsets); retention may now delete"
          " what it held")
    return 0


def _reader(cfg: LogConfig, state_dir: Path) -> Any:
    if cfg.backend is Backend.EMBEDDED:
        path = resolve(state_dir, cfg.path)
        if not path.exists():
            raise SystemExit(f"otgate log: no embedded log at {path}")
    return make_log(cfg, state_dir)  # reading needs no start()


async def topics_rows(cfg: LogConfig, state_dir: Path) -> list[dict[str, Any]]:
    """One row per topic: name, partitions, retention, priority, and (embedded)
    the retained offset range and record count."""
    log = _reader(cfg, state_dir)
    rows = []
    for t in await log.topics():
        row: dict[str, Any] = {"topic": t.name, "partitions": t.partitions}
        if isinstance(log, EmbeddedLog):
            marks = await log.watermarks(t.name)
            row["records"] = sum(n - s for s, n in marks.values())
            row["next_offsets"] = ",".join(str(n) for _, n in marks.values())
            row["retention_s"] = t.retention_s
            row["priority"] = t.priority
        rows.append(row)
    return rows


async def read_rows(
    cfg: LogConfig,
    state_dir: Path,
    topic: str,
    from_offset: int = 0,
    limit: int = 100,
    partition: int | None = None,
) -> list[dict[str, Any]]:
    """Decoded records: the record's fields plus ``_partition``, ``_offset``,
    ``_timestamp_ns`` (and ``_key``). Undecodable values come back as
    ``_error`` with the raw bytes' hex, so one bad record never hides others."""
    log = _reader(cfg, state_dir)
    decoder = Decoder(schema_store(cfg, state_dir, log))
    specs = {t.name: t for t in await log.topics()}
    if topic not in specs:
        raise SystemExit(f"otgate log: no topic {topic!r} (have: {', '.join(sorted(specs))})")
    parts = [partition] if partition is not None else range(specs[topic].partitions)
    rows: list[dict[str, Any]] = []
    for p in parts:
        if len(rows) >= limit:
            break
        for rec in await log.read(topic, p, from_offset, limit - len(rows)):
            row: dict[str, Any] = {
                "_partition": rec.partition,
                "_offset": rec.offset,
                "_timestamp_ns": rec.timestamp_ns,
                "_key": rec.key.decode(errors="replace") if rec.key else None,
            }
            try:
                obj = await decoder.decode_async(topic, rec.value)
                row.update(msgspec.to_builtins(obj))
            except Exception as e:  # operator tool: show the bad record, keep going
                row["_error"] = f"{type(e).__name__}: {e}"
                row["_raw"] = rec.value.hex()
            rows.append(row)
    return rows


def _print(rows: list[dict[str, Any]], as_json: bool, none: str = "(no records)") -> None:
    """``rows`` as a table, or one JSON object per line; ``none`` says there are none."""
    out = sys.stdout
    if as_json:
        for row in rows:
            out.write(json.dumps(row, default=str) + "\n")
        out.flush()
        return
    if not rows:
        out.write(none + "\n")
        return
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns and c not in ("_key", "_timestamp_ns")]
    cells = [[_cell(c, row.get(c)) for c in columns] for row in rows]
    heads = [c.lstrip("_") for c in columns]
    widths = [min(40, max(len(h), *(len(r[i]) for r in cells))) for i, h in enumerate(heads)]
    out.write("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for r in cells:
        out.write("  ".join(v[:w].ljust(w) for v, w in zip(r, widths, strict=True)) + "\n")
    out.flush()


def _cell(column: str, v: Any) -> str:
    if v is None:
        return ""
    if column.endswith("_time") and type(v) is int:
        return _iso(v)
    if isinstance(v, dict | list):
        return json.dumps(v, default=str)
    return str(v)


def _iso(ns: int) -> str:
    """UTC time with microseconds, for people (``--json`` keeps the integer ns)."""
    import datetime as dt

    t = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


KNOWN_TOPICS = sorted(TOPICS)
