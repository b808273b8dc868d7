"""The operator console in a real headless browser (Debian's Chromium driven by
Playwright) against a real ``otgate run``: first paint, the simulated-data
banner, the PostgreSQL sink going DEGRADED while its database is down (and back),
a bulkhead failing after injected faults and restarted from the page, an alarm
acknowledged, a dead letter reprocessed, actions greyed out for a viewer and
refused by the server all the same.

Screenshots go to the test's temp dir; with ``OTGATE_CONSOLE_SCREENSHOT=PATH``
the overview is also copied there (how the README's image is made).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import statistics
import time
import urllib.request
from pathlib import Path

import pytest
from peers.gateway import gateway_fixture, synthetic, wait_for  # noqa: F401
from peers.postgres import pg_cluster_fixture  # noqa: F401
from test_ops_gateway import high
from test_ops_gateway import read_topic as _read_topic
from test_ops_gateway import write_alarms as _write_alarms

from otgate.actors.records import AlarmState

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

SINK = """
[[sinks]]
type = "postgres"
id = "historian"
dsn = "{dsn}"
topics = ["telemetry.clean"]
breaker_failures = 2
breaker_cooldown_s = 1.0
"""
CONFIG = (
    """
[gateway]
id = "console"
fault_injection = true
[supervision]
heartbeat_interval = 0.5
heartbeat_timeout = 2.0
gateway = { intensity = 1, period = 60.0, on_exhausted = "fail_child", backoff_initial = 0.01 }
[status]
tokens = [
  { token = "view-tok", role = "viewer", name = "vic" },
  { token = "oper-tok", role = "operator", name = "olga" },
  { token = "admin-tok", role = "admin", name = "ada" },
]
[processing.validator]
rules = [{ parameter = "flow", max = 22.0, on_out_of_range = "reject" }]
[processing.aggregator]
enabled = false
"""
    + synthetic("a", "pump-1", 0.1)
    + synthetic("b", "pump-2", 0.1)
)


@pytest.fixture(name="browser")
def browser_fixture():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (tests/run.sh installs it)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def _in_thread(fn, *args):
    # Playwright's sync API runs an event loop in this thread; the log helpers run their own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def write_alarms(state_dir: Path, alarms: list) -> None:
    _in_thread(_write_alarms, state_dir, alarms)


def read_topic(state_dir: Path, topic: str) -> list:
    return _in_thread(_read_topic, state_dir, topic)


def health_latency(url: str, n: int = 300) -> dict[str, float]:
    """Milliseconds per ``GET /health`` over ``n`` sequential calls."""
    took = []
    for _ in range(n):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            resp.read()
        took.append((time.perf_counter() - t0) * 1000)
    took.sort()
    return {
        "n": n,
        "median_ms": round(statistics.median(took), 2),
        "p99_ms": round(took[int(n * 0.99) - 1], 2),
        "max_ms": round(took[-1], 2),
    }


def row(page, table: str, row_id: str):
    return page.locator(f'#{table} tr[data-id="{row_id}"]')


def test_console_in_a_browser(gateway, browser, pg_cluster, tmp_path: Path) -> None:
    gw = gateway(CONFIG + SINK.format(dsn=pg_cluster.dsn()))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, "ready")
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []  # script errors and CSP refusals show here
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(f"{msg.text} {msg.location}") if msg.type == "error" else None,
    )
    page.goto(gw.url + "/console/")
    page.wait_for_selector('#tree tr[data-id="a"]')
    paint = page.evaluate(
        "() => Object.fromEntries(performance.getEntriesByType('paint')"
        ".map(e => [e.name, e.startTime]))"
    )
    nav = page.evaluate("() => performance.getEntriesByType('navigation')[0].toJSON()")
    assert "SIMULATED DATA" in page.inner_text("#simulated") and "a, b" in page.inner_text(
        "#simulated"
    )
    page.wait_for_function(  # before login the page polls /health every 2 s
        "() => document.getElementById('rollup').textContent === 'HEALTHY'", timeout=30_000
    )

    # A viewer sees the tables with every action greyed out; the server refuses it anyway.
    page.fill("#token", "view-tok")
    page.click("#login button")
    page.wait_for_selector("#live.on")
    assert page.inner_text("#who-role") == "viewer"
    wait_for(lambda: row(page, "tree", "a").count() == 1, what="tree row")
    assert row(page, "tree", "a").locator('button[data-action="component.restart"]').is_disabled()
    status, _ = gw.post("/components/a/restart", token="view-tok")
    assert status == 403
    page.click("#logout")

    # An operator: the alarm appears live, Ack writes the command (no evaluator on
    # this branch: accepted, shown as pending on the row until the table moves).
    page.fill("#token", "oper-tok")
    page.click("#login button")
    page.wait_for_selector("#live.on")
    assert page.inner_text("#who-name") == "olga"
    state_dir = tmp_path / "state"
    write_alarms(state_dir, [high(1, AlarmState.ACTIVE_UNACKED)])
    alarm = row(page, "alarms", "pump-1:flow_high")
    alarm.wait_for(timeout=20_000)
    assert alarm.get_attribute("data-state") == "ACTIVE_UNACKED"
    alarm.locator('button[data-action="alarms.ack"]').click()
    alarm.locator(".pending").wait_for(timeout=10_000)
    assert "ack sent" in alarm.inner_text()
    cmds = read_topic(state_dir, "alarms.commands")
    # the ack names the activation the row showed
    assert [
        (c.action.value, c.alarm_ids, c.occurrence_ids, c.by, c.source.split(":")[0])
        for c in cmds
    ] == [("ACK", ["pump-1:flow_high"], {"pump-1:flow_high": "o1"}, "olga", "console")]
    # The evaluator's transition arrives: the row follows and the pending mark goes.
    write_alarms(
        state_dir,
        [high(2, AlarmState.ACTIVE_ACKED, event="ack", by="olga", request_id=cmds[0].request_id)],
    )
    page.wait_for_selector('#alarms tr[data-state="ACTIVE_ACKED"]', timeout=20_000)
    assert alarm.locator(".pending").count() == 0
    assert alarm.locator('button[data-action="alarms.ack"]').is_disabled()

    # Shelve sends its duration from the row's choice.
    alarm.locator("select").select_option("28800")
    alarm.locator('button[data-action="alarms.shelve"]').click()
    alarm.locator(".pending").wait_for(timeout=10_000)
    shelve = read_topic(state_dir, "alarms.commands")[-1]
    assert (shelve.action.value, shelve.duration_s, shelve.by) == ("SHELVE", 28800.0, "olga")
    write_alarms(
        state_dir,
        [high(3, AlarmState.SHELVED, event="shelve", by="olga", request_id=shelve.request_id)],
    )
    page.wait_for_selector('#alarms tr[data-state="SHELVED"]', timeout=20_000)
    assert alarm.locator(".pending").count() == 0
    assert alarm.locator('button[data-action="alarms.unshelve"]').is_enabled()

    # A dead letter (flow above 22 is rejected) reprocessed from the page: the rule
    # still refuses it, so the page says so and the letter stays pending; once the
    # rule is widened (SIGHUP reload), the same click puts it in telemetry.clean.
    page.click("#dlq-refresh")
    first = page.locator("#dlq tbody tr").first
    first.wait_for(timeout=30_000)
    letter = first.get_attribute("data-id")
    reprocess = f'#dlq tr[data-id="{letter}"] button[data-action="dlq.reprocess"]'
    page.click(reprocess)
    page.wait_for_function(
        "id => document.getElementById('notice').textContent.startsWith(id + ': ')", arg=letter
    )
    assert "refused" in page.inner_text("#notice")
    gw.config.write_text(gw.config.read_text().replace("max = 22.0", "max = 40.0"))
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config_reloaded" in gw.log(), 30, "reload")
    page.click(reprocess)
    page.wait_for_function(
        "id => document.getElementById('notice').textContent === id + ': reprocessed'",
        arg=letter,
        timeout=20_000,
    )
    page.wait_for_selector(f'#dlq tr[data-id="{letter}"]', state="detached")  # no longer pending
    page.select_option("#dlq-disposition", "REPROCESSED")
    page.wait_for_selector(f'#dlq tr[data-id="{letter}"][data-disposition="REPROCESSED"]')
    assert page.locator(f"{reprocess}").is_disabled()
    wait_for(lambda: gw.get("/health")[1]["status"] == "HEALTHY", 30, "healthy after reload")

    # The database goes away: the sink's breaker opens, the sink is DEGRADED and its
    # lag grows on the page; the database is back: RUNNING, lag drained.
    sink = "historian/sink.historian"
    page.wait_for_function(
        "id => Number(document.querySelector(`#sinks tr[data-id='${id}'] td:nth-child(2)`)"
        "?.textContent) > 0",
        arg=sink,
        timeout=30_000,
    )
    pg_cluster.stop()
    page.wait_for_selector(f'#tree tr[data-id="{sink}"][data-state="DEGRADED"]', timeout=30_000)
    page.wait_for_function("() => document.getElementById('rollup').textContent === 'DEGRADED'")
    page.wait_for_function(
        "id => Number(document.querySelector(`#sinks tr[data-id='${id}'] td:nth-child(4)`)"
        ".textContent) > 0",
        arg=sink,
        timeout=30_000,
    )
    page.screenshot(path=str(tmp_path / "console-sink-degraded.png"), full_page=True)
    pg_cluster.start()
    page.wait_for_selector(f'#tree tr[data-id="{sink}"][data-state="RUNNING"]', timeout=30_000)
    page.wait_for_function(
        "() => document.getElementById('rollup').textContent === 'HEALTHY'", timeout=30_000
    )

    # Faults: bulkhead a exits twice (restart intensity 1), so it is FAILED and the
    # gateway DEGRADED; the operator restarts it from the page.
    admin = {"bulkhead": "a", "kind": "exit"}
    assert gw.post("/faults", admin, token="admin-tok")[0] == 200
    wait_for(lambda: gw.component("a")["restarts"] == 1, what="first restart")
    wait_for(lambda: gw.component("a")["state"] == "RUNNING", what="a running again")
    assert gw.post("/faults", admin, token="admin-tok")[0] == 200
    page.wait_for_selector('#tree tr[data-id="a"][data-state="FAILED"]', timeout=20_000)
    page.wait_for_function("() => document.getElementById('rollup').textContent === 'DEGRADED'")
    page.screenshot(path=str(tmp_path / "console-degraded.png"), full_page=True)
    row(page, "tree", "a").locator('button[data-action="component.restart"]').click()
    page.wait_for_selector('#tree tr[data-id="a"][data-state="RUNNING"]', timeout=20_000)
    page.wait_for_function(
        "() => document.getElementById('rollup').textContent === 'HEALTHY'", timeout=20_000
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('#events li')]"
        ".some(li => li.textContent.includes('olga (operator) via console: component.restart'))",
        timeout=20_000,
    )
    # Every stream (one per login here) starts the lists afresh: no line twice.
    for feed in ("logs", "events"):
        seqs = page.eval_on_selector_all(f"#{feed} li", "lis => lis.map(li => li.dataset.seq)")
        assert seqs and len(seqs) == len(set(seqs)), feed
    overview = tmp_path / "console.png"
    page.screenshot(path=str(overview), full_page=True)
    if os.environ.get("OTGATE_CONSOLE_SCREENSHOT"):
        shutil.copy(overview, os.environ["OTGATE_CONSOLE_SCREENSHOT"])

    # The audit names the console as the surface of every action it made.
    audit = [(a.who, a.surface, a.action, a.result) for a in read_topic(state_dir, "logs.audit")]
    assert ("olga", "console", "alarms.ack", "ok") in audit
    assert ("olga", "console", "dlq.reprocess", "ok") in audit
    assert ("olga", "console", "component.restart", "ok") in audit

    assert errors == []

    # /health stays quick with the console's live stream open (numbers for the note).
    latency = health_latency(gw.url)
    report = {"paint_ms": paint, "dom_content_loaded_ms": nav["domContentLoadedEventEnd"]}
    (tmp_path / "console-timings.json").write_text(json.dumps({**report, "health": latency}))
    print("console_timings", json.dumps({**report, "health": latency}))
    assert gw.stop() == 0
