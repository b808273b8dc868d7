"""``otgate dlq list|show|reprocess|discard|revalidate``: the dead-letter
workflow of the running gateway (through its status endpoint; see api_client.py).

A dead letter is named ``<topic>/<partition>/<offset>`` (``dlq.telemetry/0/12``).
``reprocess`` and ``discard`` take names, or ``--matching`` with the list
filters to act on every letter they select.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from otgate.supervisors.api_client import add_endpoint_args, iso, run_call, table

FILTERS = ("topic", "reason", "asset", "parameter", "since", "until", "disposition")


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topic", default="", help="telemetry or events (default both)")
    p.add_argument("--reason", default="", help="reason prefix, e.g. out_of_range")
    p.add_argument("--asset", default="", help="asset id or fnmatch pattern")
    p.add_argument("--parameter", default="", help="parameter or fnmatch pattern")
    p.add_argument("--since", default="", help="written at or after (ISO 8601)")
    p.add_argument("--until", default="", help="written before (ISO 8601)")
    p.add_argument("--disposition", default="", help="PENDING, REPROCESSED, DISCARDED...")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dlq", help="list, show, reprocess and discard dead letters")
    cmds = p.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    ls = cmds.add_parser("list", help="dead letters with their disposition")
    _filters(ls)
    ls.add_argument("--limit", type=int, default=100, help="at most this many rows")
    ls.set_defaults(func=run_list)
    show = cmds.add_parser("show", help="one dead letter, its original reading and history")
    show.add_argument("id", metavar="ID")
    show.set_defaults(func=run_show)
    for p_ in (ls, show):
        add_endpoint_args(p_)
    for name, text in (
        ("reprocess", "re-validate against the current rules; passing ones go to *.clean once"),
        ("discard", "mark as never to be reprocessed"),
    ):
        a = cmds.add_parser(name, help=f"{text} (operator)")
        a.add_argument("ids", nargs="*", metavar="ID")
        a.add_argument(
            "--matching", action="store_true", help="act on every letter the filters select"
        )
        _filters(a)
        a.add_argument("--note", default="", help="why (kept with the disposition and audit)")
        a.add_argument("--request-id", default="", help="ties the records to this call")
        add_endpoint_args(a)
        a.set_defaults(func=run_mutate, action=name)
    rv = cmds.add_parser(
        "revalidate", help="reprocess every pending letter after a rule change (engineer)"
    )
    rv.add_argument("--note", default="")
    rv.add_argument("--request-id", default="")
    add_endpoint_args(rv)
    rv.set_defaults(func=run_mutate, action="revalidate", ids=[], matching=False)


def _query(args: argparse.Namespace) -> dict[str, str]:
    return {k: getattr(args, k) for k in FILTERS if getattr(args, k, "")}


def run_list(args: argparse.Namespace) -> int:
    query = {**_query(args), "limit": args.limit}
    return run_call(args, "dlq list", "GET", "/dlq", show_letters, query=query)


def show_letters(doc: dict[str, Any]) -> None:
    rows = [_row(v) for v in doc["letters"]]
    head = ["ID", "WRITTEN", "ASSET", "PARAMETER", "VALUE", "REASON", "DISPOSITION"]
    print(table(head, rows) if rows else "(no dead letters)")
    if doc["total"] > len(rows):
        print(f"({len(rows)} of {doc['total']} shown; --limit for more)")


def _row(v: dict[str, Any]) -> list[Any]:
    lt, r = v["letter"], v["letter"]["reading"]
    last = v.get("last") or {}
    reason = last.get("reason") or lt["reason"]
    return [
        v["id"],
        iso(lt["gateway_time"]),
        r["asset_id"],
        r["parameter"],
        r["value"],
        reason,
        v["disposition"],
    ]


def run_show(args: argparse.Namespace) -> int:
    return run_call(args, "dlq show", "GET", "/dlq/" + args.id.strip("/"), show_letter)


def show_letter(doc: dict[str, Any]) -> None:
    lt = doc["letter"]
    print(f"{doc['id']}: {doc['disposition']}")
    print(f"  reason:   {lt['reason']}" + (f" ({lt['error']})" if lt.get("error") else ""))
    print(f"  source:   {lt['source_topic']}/{lt['source_partition']}/{lt['source_offset']}")
    print(f"  reading:  {_reading(lt['reading'])}")
    orig = doc.get("original")
    print(f"  original: {_reading(orig) if orig else '(no longer in the raw topic)'}")
    if doc["history"]:
        rows = [
            [
                iso(h["gateway_time"]),
                h["state"],
                h.get("by", ""),
                h.get("reason", ""),
                h.get("note", ""),
            ]
            for h in doc["history"]
        ]
        print(table(["TIME", "STATE", "BY", "REASON", "NOTE"], rows))


def _reading(r: dict[str, Any]) -> str:
    return (
        f"{r['asset_id']}/{r['parameter']} = {r['value']} {r.get('unit', '')} "
        f"{r['quality']} at {iso(r.get('device_time'))}"
    ).replace("  ", " ")


def run_mutate(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"note": args.note}
    if args.request_id:
        body["request_id"] = args.request_id
    if args.action != "revalidate":
        if bool(args.ids) == bool(args.matching):
            print(f"otgate dlq {args.action}: give IDs or --matching with filters", file=sys.stderr)
            return 1
        if args.ids:
            body["ids"] = args.ids
        else:
            body["filter"] = _query(args)
    return run_call(
        args,
        f"dlq {args.action}",
        "POST",
        f"/dlq/{args.action}",
        lambda doc: show_outcomes(args.action, doc),
        body=body,
    )


def show_outcomes(action: str, doc: dict[str, Any]) -> None:
    rows = [
        [o["id"], o["result"], o.get("reason", ""), o.get("clean_topic", "")]
        for o in doc["outcomes"]
    ]
    print(table(["ID", "RESULT", "REASON", "INTO"], rows) if rows else "(nothing selected)")
    if doc.get("omitted"):
        print(f"({doc['omitted']} more not listed)")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(doc["counts"].items()))
    print(f"{action}: {counts or 'nothing to do'} (request {doc['request_id']})")
