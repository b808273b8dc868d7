"""``otgate alarms list|show|ack|shelve|unshelve|suppress|unsuppress|reset|
out-of-service|return-to-service``: the alarm table and operator actions of
the running gateway (through its status endpoint; see api_client.py)."""

from __future__ import annotations

import argparse
import re
import urllib.parse
from typing import Any

from otgate.supervisors.api_client import add_endpoint_args, iso, run_call, table

ACTIONS = {
    "ack": "acknowledge alarms (operator)",
    "shelve": "hide alarms for a time (operator; --for)",
    "unshelve": "end shelving (operator)",
    "suppress": "suppress alarms (operator)",
    "unsuppress": "end suppression (operator)",
    "reset": "reset latched alarms whose condition cleared (operator)",
    "out-of-service": "take alarms out of service (engineer)",
    "return-to-service": "return alarms to service (engineer)",
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alarms", help="list, show and act on the running gateway's alarms")
    cmds = p.add_subparsers(dest="alarms_command", required=True, metavar="ACTION")
    ls = cmds.add_parser("list", help="the current alarm table")
    ls.add_argument("--state", default="", help="states, comma-separated (ACTIVE_UNACKED,...)")
    ls.add_argument("--severity", default="", help="severities, comma-separated (HIGH,...)")
    ls.add_argument("--asset", default="", help="asset id or fnmatch pattern")
    ls.add_argument("--area", default="", help="area or fnmatch pattern")
    ls.set_defaults(func=run_list)
    show = cmds.add_parser("show", help="one alarm and its recent transitions")
    show.add_argument("alarm_id")
    show.set_defaults(func=run_show)
    add_endpoint_args(ls)
    add_endpoint_args(show)
    for name, text in ACTIONS.items():
        a = cmds.add_parser(name, help=text)
        a.add_argument(
            "alarm_ids",
            nargs="+",
            metavar="ALARM_ID",
            help="an alarm id, or an occurrence id (ALARM_ID#N, as `alarms show` prints it) "
            "to act only while that activation lasts",
        )
        a.add_argument("--note", default="", help="why (kept in the alarm journal and audit)")
        a.add_argument(
            "--request-id", default="", help="idempotency key (default: a new one per call)"
        )
        a.add_argument(
            "--wait",
            type=float,
            default=None,
            help="seconds to wait for the evaluator to apply it (default 5, 0: do not wait)",
        )
        if name == "shelve":
            a.add_argument(
                "--for",
                dest="duration",
                required=True,
                type=duration,
                help="how long, e.g. 600, 30m, 8h",
            )
        add_endpoint_args(a)
        a.set_defaults(func=run_action, action=name)


def duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds or 30m, 8h, 1d")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def run_list(args: argparse.Namespace) -> int:
    query = {"state": args.state, "severity": args.severity, "asset": args.asset, "area": args.area}
    return run_call(
        args,
        "alarms list",
        "GET",
        "/alarms",
        lambda doc: print(render_alarms(doc["alarms"])),
        query=query,
    )


def render_alarms(alarms: list[dict[str, Any]]) -> str:
    if not alarms:
        return "(no alarms)"
    rows = [
        [
            a["alarm_id"],
            a["state"],
            a["severity"],
            a["asset_id"],
            a.get("area", ""),
            iso(a.get("raised_time")),
            a.get("by", ""),
            a.get("message", ""),
        ]
        for a in alarms
    ]
    head = ["ALARM", "STATE", "SEVERITY", "ASSET", "AREA", "RAISED", "LAST BY", "MESSAGE"]
    return table(head, rows)


def run_show(args: argparse.Namespace) -> int:
    path = "/alarms/" + urllib.parse.quote(args.alarm_id, safe=":")
    return run_call(args, "alarms show", "GET", path, show_alarm)


def show_alarm(doc: dict[str, Any]) -> None:
    a = doc["alarm"]
    print(f"{a['alarm_id']}: {a['state']} ({a['severity']}) on {a['asset_id']}/{a['parameter']}")
    if a.get("occurrence_id"):
        print(f"activation {a['occurrence_id']} (ack it alone: otgate alarms ack '{a['occurrence_id']}')")
    rows = [
        [
            h["seq"],
            iso(h["gateway_time"]),
            h["event"],
            h["state"],
            h.get("by", ""),
            h.get("source", ""),
            h.get("note", ""),
        ]
        for h in doc["history"]
    ]
    print(table(["SEQ", "TIME", "EVENT", "STATE", "BY", "FROM", "NOTE"], rows))


def split_occurrences(ids: list[str]) -> tuple[list[str], dict[str, str]]:
    """``ALARM_ID#N`` arguments name one activation: ``(alarm_ids, occurrence_ids)``."""
    alarm_ids, occurrences = [], {}
    for text in ids:
        alarm_id, sep, n = text.rpartition("#")
        if sep and alarm_id and n.isdigit():
            occurrences[alarm_id] = text
        else:
            alarm_id = text
        alarm_ids.append(alarm_id)
    return alarm_ids, occurrences


def run_action(args: argparse.Namespace) -> int:
    alarm_ids, occurrences = split_occurrences(args.alarm_ids)
    body: dict[str, Any] = {"alarm_ids": alarm_ids, "note": args.note}
    if occurrences:
        body["occurrence_ids"] = occurrences
    if args.request_id:
        body["request_id"] = args.request_id
    if args.action == "shelve":
        body["duration_s"] = args.duration
    if args.wait is not None:
        body["wait_s"] = args.wait
    return run_call(
        args,
        f"alarms {args.action}",
        "POST",
        f"/alarms/{args.action}",
        lambda doc: show_result(args.action, doc),
        body=body,
        exit_code=lambda doc: 1 if doc["status"] == "refused" else 0,
    )


def show_result(action: str, doc: dict[str, Any]) -> None:
    what = {
        "applied": "applied",
        "accepted": "accepted, not yet applied by the evaluator",
        "unchanged": "nothing to change",
        "refused": "refused by the evaluator",
    }[doc["status"]]
    print(f"{action} {what} (request {doc['request_id']})")
    for t in doc["transitions"]:
        print(f"  {t['alarm_id']}: {t['previous_state']} -> {t['state']}")
    for alarm_id, reason in doc.get("refused", {}).items():
        print(f"  {alarm_id}: refused ({reason})")
    if doc["unchanged"]:
        print(f"  unchanged: {', '.join(doc['unchanged'])}")
