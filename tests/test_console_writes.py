"""The console's Setpoints panel in headless Chromium against a real ``otgate
run`` writing to pymodbus' real server: an operator sees the engineer's point
greyed out (the server refuses it all the same), an engineer writes from the
page and sees WRITTEN, the device's register changes, the shadow reports the
value, and the audit names the console."""

from __future__ import annotations

import json

from peers.gateway import gateway_fixture, wait_for  # noqa: F401
from test_console import browser_fixture, row  # noqa: F401
from test_write_gateway import TOKENS, config, device_fixture, otgate, post  # noqa: F401

from otgate.protocols.modbus.config import Table


def login(page, token: str) -> None:
    page.fill("#token", token)
    page.click("#login button")
    page.wait_for_selector("#live.on")


def test_setpoints_panel_writes_to_the_device(gateway, browser, device) -> None:
    store = device.store
    gw = gateway(config(device.port))
    wait_for(lambda: gw.get("/health/ready")[0] == 200, 60, "ready")
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(gw.url + "/console/")

    # An operator may switch the pump but not move the engineer's setpoint.
    login(page, TOKENS["operator"])
    setpoint, pump = row(page, "setpoints", "press/setpoint"), row(page, "setpoints", "press/pump_on")
    setpoint.wait_for(timeout=20_000)
    assert "0 … 100; role engineer" in setpoint.inner_text()
    assert setpoint.locator('button[data-action="point.write"]').is_disabled()
    assert pump.locator('button[data-action="point.write"]').is_enabled()
    assert row(page, "setpoints", "press/temperature").count() == 0  # not writable
    code, doc = post(gw, "/points/press/setpoint/write", {"value": 40}, TOKENS["operator"])
    assert (code, doc["status"]) == (403, "REJECTED")
    pump.locator("input").fill("true")
    pump.locator('button[data-action="point.write"]').click()
    page.wait_for_selector('#setpoints tr[data-id="press/pump_on"][data-status]', timeout=30_000)
    assert pump.get_attribute("data-status") == "WRITTEN", pump.inner_text()
    assert store.tables[1][Table.COIL][3] == 1
    page.click("#logout")

    # An engineer writes the setpoint: WRITTEN on the row, the register holds it
    # (42.5 at scale 0.5), and the shadow reports it with no delta.
    login(page, TOKENS["engineer"])
    setpoint.wait_for(timeout=20_000)
    setpoint.locator("input").fill("142")  # above max: refused by the gateway
    setpoint.locator('button[data-action="point.write"]').click()
    page.wait_for_selector('#setpoints tr[data-id="press/setpoint"][data-status]', timeout=30_000)
    assert setpoint.get_attribute("data-status") == "REJECTED"
    assert "above max 100" in setpoint.locator(".result").inner_text()
    setpoint.locator("input").fill("42.5")
    setpoint.locator('button[data-action="point.write"]').click()
    page.wait_for_selector(
        '#setpoints tr[data-id="press/setpoint"][data-status="WRITTEN"]', timeout=30_000
    )
    assert "WRITTEN (read back 42.5)" in setpoint.locator(".result").inner_text()
    assert store.tables[1][Table.HOLDING][10] == 85
    page.wait_for_function(
        "() => document.querySelector('#setpoints tr[data-id=\"press/setpoint\"] .reported')"
        ".textContent === '42.5'",
        timeout=20_000,
    )
    assert setpoint.get_attribute("data-delta") == "false"
    assert "42.5 (WRITTEN, engineer-1)" in setpoint.locator(".desired").inner_text()
    # someone changes it at the panel: the page shows the delta
    store.set_registers(1, Table.HOLDING, 10, [20])
    page.wait_for_selector(
        '#setpoints tr[data-id="press/setpoint"][data-delta="true"]', timeout=30_000
    )
    assert setpoint.locator(".reported").inner_text() == "10"

    audit = otgate("log", "read", "logs.audit", "--config", str(gw.config), "--json")
    rows = [json.loads(line) for line in audit.stdout.splitlines()]
    seen = {(r["who"], r["action"], r["target"], r["result"], r["surface"]) for r in rows}
    assert ("operator-1", "point.write", "press/pump_on", "ok", "console") in seen
    assert ("engineer-1", "point.write", "press/setpoint", "ok", "console") in seen
    assert ("engineer-1", "point.write", "press/setpoint", "refused", "console") in seen
    assert ("operator-1", "point.write", "press/setpoint", "refused", "http") in seen
    assert errors == []
    assert gw.stop() == 0
