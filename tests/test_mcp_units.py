"""The MCP surface's pure parts: confirmation tokens, the diagnosis and DLQ
patterns, suggested config diffs, and the config scrubber."""

from __future__ import annotations

import pytest

from otgate.config.secrets import Redactor
from otgate.supervisors.mcptools.analysis import diagnose, dlq_patterns
from otgate.supervisors.mcptools.config_diff import BadChange, suggest
from otgate.supervisors.mcptools.confirm import ConfirmationRefused, Confirmations
from otgate.supervisors.service.reads import scrub


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_confirmation_is_one_time_bound_to_arguments_session_and_time() -> None:
    clock = Clock()
    book = Confirmations(ttl_s=60, max_pending=2, clock=clock)
    args = {"alarm_ids": ["a", "b"], "note": ""}
    tok = book.issue("ack_alarm", args, "s1", {"a": "a#3"})  # what the preview bound it to
    assert book.redeem(tok, "ack_alarm", {"note": "", "alarm_ids": ["a", "b"]}, "s1") == {
        "a": "a#3"
    }  # key order does not matter
    with pytest.raises(ConfirmationRefused, match="already used"):
        book.redeem(tok, "ack_alarm", args, "s1")

    for other, session, why in (
        ({"alarm_ids": ["a"], "note": ""}, "s1", "other arguments"),
        (args, "s2", "another MCP session"),
    ):
        tok = book.issue("ack_alarm", args, "s1")
        with pytest.raises(ConfirmationRefused, match=why):
            book.redeem(tok, "ack_alarm", other, session)
        with pytest.raises(ConfirmationRefused, match="already used"):  # spent by the refusal
            book.redeem(tok, "ack_alarm", args, "s1")
    tok = book.issue("restart_component", {"component": "a"}, "s1")
    with pytest.raises(ConfirmationRefused, match="other arguments"):
        book.redeem(tok, "ack_alarm", {"component": "a"}, "s1")

    tok = book.issue("restart_component", {"component": "a"}, "s1")
    clock.now += 61
    with pytest.raises(ConfirmationRefused, match="expired"):
        book.redeem(tok, "restart_component", {"component": "a"}, "s1")

    # Bounded: the oldest proposal is forgotten first.
    old = book.issue("restart_component", {"component": "a"}, "s1")
    book.issue("restart_component", {"component": "b"}, "s1")
    book.issue("restart_component", {"component": "c"}, "s1")
    with pytest.raises(ConfirmationRefused, match="unknown"):
        book.redeem(old, "restart_component", {"component": "a"}, "s1")


def node(cid: str, state: str = "RUNNING", **kw) -> dict:
    return {"id": cid, "kind": kw.pop("kind", "bulkhead"), "state": state, "restarts": 0, **kw}


def test_diagnose_names_what_is_broken_since_when_and_why() -> None:
    health = {
        "status": "DEGRADED",
        "time": 1000.0,
        "components": [
            node("ok", children=[node("ok.session", kind="session")]),
            node(
                "plc",
                "DEGRADED",
                children=[
                    node(
                        "plc.session",
                        "DEGRADED",
                        kind="modbus_tcp",
                        last_error="ConnectionRefusedError: [Errno 111] Connect call failed",
                        last_error_at=940.0,
                    )
                ],
            ),
            node("hist", "FAILED", restarts=5, last_error="boom", last_error_at=990.0),
            node(
                "pg",
                children=[
                    node(
                        "pg.sink",
                        kind="sink.postgres",
                        metrics={"lag_records": 5000.0, "breaker_state": 2.0},
                        mailbox_depth=90,
                        mailbox_size=100,
                    )
                ],
            ),
            node("flappy", restarts=2),
        ],
    }
    alarms = [{"active": True, "acked": False, "severity": "HIGH"}, {"active": False}]
    d = diagnose(health, alarms)
    order = [f["component"] for f in d["findings"]]
    assert order == ["hist", "plc", "plc/plc.session", "flappy", "pg/pg.sink"]
    hist, _plc, session, flappy, sink = d["findings"]
    assert "gave up after 5 restarts" in hist["likely_cause"][0]
    assert (hist["last_error_at"], hist["last_error_age_s"]) == ("1970-01-01T00:16:30Z", 10.0)
    assert session["last_error_age_s"] == 60.0
    assert session["likely_cause"][0].startswith("cannot reach its peer")
    assert flappy["likely_cause"] == ["restarted 2 times; running again now"]
    causes = " | ".join(sink["likely_cause"])
    assert "breaker open" in causes and "5000 records behind" in causes and "90/100" in causes
    assert d["summary"].startswith("DEGRADED: 5 component(s) need attention; worst hist (FAILED)")
    assert d["alarms"] == {"active_or_unacked": 1, "by_severity": {"HIGH": 1}}

    calm = diagnose({"status": "HEALTHY", "time": 1.0, "components": [node("ok")]})
    assert calm["findings"] == [] and calm["summary"] == "HEALTHY: every component is running"


def letter(reason: str, asset: str, t: int, state: str = "PENDING") -> dict:
    return {
        "id": f"dlq.telemetry/0/{t}",
        "disposition": state,
        "letter": {
            "reason": reason,
            "stage": "validator",
            "gateway_time": t,
            "reading": {"asset_id": asset, "parameter": "flow"},
        },
    }


def test_dlq_patterns_group_by_reason_kind_and_point() -> None:
    letters = [
        letter("out_of_range [None, 18.0]", "pump-1", 5),
        letter("out_of_range [None, 18.0]", "pump-1", 2, "REPROCESSED"),
        letter("out_of_range [None, 18.0]", "pump-1", 9),
        letter("stale: 30 s old", "pump-2", 4),
    ]
    p = dlq_patterns(letters, top=1)
    assert p["letters"] == 4 and p["more_patterns"] == 1
    (top,) = p["patterns"]
    assert (top["reason"], top["point"], top["count"]) == ("out_of_range", "pump-1/flow", 3)
    assert (top["first_gateway_time"], top["last_gateway_time"]) == (2, 9)
    assert top["dispositions"] == {"PENDING": 2, "REPROCESSED": 1}
    assert dlq_patterns([]) == {"letters": 0, "patterns": [], "more_patterns": 0}


RUNNING = {
    "gateway": {"id": "g1"},
    "adapters": [
        {
            "type": "synthetic",
            "id": "a",
            "asset_id": "pump-1",
            "interval": 1.0,
            "points": [{"parameter": "flow", "signal": {"kind": "sine"}}],
        }
    ],
}


def test_suggest_returns_a_checked_diff_and_refuses_credentials() -> None:
    out = suggest(RUNNING, {"adapters[0].interval": 2.5, "gateway.id": "g2"})
    assert out["applied"] is False and out["valid"], out["problems"]
    assert '-      "interval": 1.0,' in out["diff"] and '+      "interval": 2.5,' in out["diff"]
    assert '+    "id": "g2"' in out["diff"]
    assert RUNNING["adapters"][0]["interval"] == 1.0  # the running tree is untouched
    bad = suggest(RUNNING, {"adapters[0].interval": -1})
    assert not bad["valid"] and bad["problems"][0].startswith("adapters[0].interval")
    assert not suggest(RUNNING, {"gateway.colour": "red"})["valid"]  # strict: unknown field
    for change, why in (
        ({"status.tokens[0].token": "x"}, "credentials"),
        ({"sinks[0].password": "x"}, "credentials"),
        ({"nope.deeper": 1}, "no 'nope'"),
        ({"adapters[5]": {}}, "outside the list"),
        ({}, "at least one"),
    ):
        with pytest.raises(BadChange, match=why):
            suggest(RUNNING, change)


def test_scrub_hides_secret_values_credential_fields_and_dsn_passwords() -> None:
    tree = {
        "status": {"tokens": [{"token": "literal-tok", "name": "olga"}]},
        "sinks": [
            {"dsn": "postgresql://otgate:pg-pass@127.0.0.1:5432/db", "name": "pg"},
            {"dsn": "host=db user=otgate password='pg pass' dbname=x"},
            {"url": "http://ingest/?key=from-secret-dir", "api_key": "k", "retries": 3},
        ],
    }
    out = scrub(tree, Redactor({"from-secret-dir"}))
    assert out == {
        "status": {"tokens": [{"token": "***", "name": "olga"}]},
        "sinks": [
            {"dsn": "postgresql://otgate:***@127.0.0.1:5432/db", "name": "pg"},
            {"dsn": "host=db user=otgate password=*** dbname=x"},
            {"url": "http://ingest/?key=***", "api_key": "***", "retries": 3},
        ],
    }


def test_otgate_mcp_refuses_non_loopback_and_missing_token(capsys, monkeypatch) -> None:
    from otgate.supervisors.cli import main

    monkeypatch.setenv("OTGATE_TOKEN", "t")
    assert main(["mcp", "--http", "0.0.0.0:8790"]) == 2
    assert "only a loopback address" in capsys.readouterr().err
    assert main(["mcp", "--http", "127.0.0.1:x"]) == 2
    assert main(["mcp", "--confirm-ttl", "0"]) == 2
    monkeypatch.delenv("OTGATE_TOKEN")
    assert main(["mcp"]) == 3  # stdio needs the caller's token
    assert "a token is required" in capsys.readouterr().err
