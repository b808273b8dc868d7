"""The fault-injection harness: every shipped scenario loses and duplicates
nothing, and the checker does call a loss a loss."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from otgate.simulations.harness.checker import Stream, settled
from otgate.simulations.harness.cmd import load_scenario, summary, verdict
from otgate.simulations.harness.run import Outcome

ALONE = ("reload-storm", "slow-flapping")
"""Scenarios whose verdict counts on timing (every SIGHUP handled before the next
file; healthy devices polled on time): they run with no other scenario beside."""
SCENARIOS = sorted(
    (
        p
        for p in (Path(__file__).resolve().parent.parent / "simulations" / "scenarios").glob("*.toml")
        if p.stem != "soak"  # a long run: `otgate simulate --scenario soak.toml --duration 1h`
    ),
    key=lambda p: (p.stem not in ALONE, p.stem),  # the lone ones first, then the overlapped
)


class Runs:
    """``otgate simulate`` runs of the selected scenarios, one started ahead: while
    a test waits for its scenario, the next one already runs (two at a time on
    the CI's two cores: most of a run is its timeline and drain, not CPU). The
    next starts once this one's gateway is ready: two start-ups (imports,
    initdb, every bulkhead at once) never compete. ``ALONE`` ones overlap none."""

    def __init__(self, tmp: pytest.TempPathFactory, order: list[Path]) -> None:
        self.tmp = tmp
        self.order = order
        self.procs: dict[Path, tuple[subprocess.Popen[str], Path]] = {}

    def start(self, scenario: Path) -> None:
        if scenario in self.procs:
            return
        workdir = self.tmp.mktemp(scenario.stem)
        with (workdir / "stdout").open("w") as out, (workdir / "stderr").open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "otgate.supervisors.cli", "simulate",
                 "--scenario", str(scenario), "--workdir", str(workdir)],
                stdout=out, stderr=err, text=True,
            )
        self.procs[scenario] = (proc, workdir)

    def result(self, scenario: Path) -> tuple[int, str, str]:
        """Exit code, stdout and stderr of ``scenario``'s run (and the next one started)."""
        self.start(scenario)
        at = self.order.index(scenario)
        after = self.order[at + 1] if at + 1 < len(self.order) else None
        if after and after not in self.procs and not {scenario.stem, after.stem} & set(ALONE):
            self.ready(scenario)
            self.start(after)
        proc, workdir = self.procs[scenario]
        rc = proc.wait(600)
        return rc, (workdir / "stdout").read_text(), (workdir / "stderr").read_text()

    def ready(self, scenario: Path, timeout: float = 120.0) -> None:
        """Wait until ``scenario``'s gateway is ready (or its run ended)."""
        proc, workdir = self.procs[scenario]
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if " producing for " in (workdir / "stderr").read_text(errors="replace"):
                return
            time.sleep(0.2)

    def stop(self) -> None:
        """Interrupt runs no test waited for (they stop their gateway and peers)."""
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc, _ in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    order = [
        item.callspec.params["scenario"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_scenario_loses_nothing"
        and not item.get_closest_marker("skip")
    ]
    r = Runs(tmp_path_factory, order)
    yield r
    r.stop()


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_loses_nothing(scenario: Path, runs: Runs) -> None:
    load_scenario(scenario)  # valid before we spend time on it
    rc, stdout, stderr = runs.result(scenario)
    skipped = [line for line in stdout.splitlines() if line.startswith("SKIP ")]
    if skipped and rc == 0:
        pytest.skip(skipped[0])  # e.g. disk-full where no tmpfs can be mounted
    verdict = [line for line in stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert rc == 0, stdout + stderr[-3000:]
    assert verdict and verdict[0].startswith("PASS ")
    assert " lost=0 " in verdict[0] and " duplicates=0 " in verdict[0]
    assert "delivered=0 " not in verdict[0]
    if "alarm_transitions=" in verdict[0]:  # the alarm scenario: journal and webhook counts
        for count in ("journal_lost=0", "journal_duplicates=0", "webhook_lost=0",
                      "webhook_duplicates=0"):
            assert f" {count} " in verdict[0], verdict[0]
        assert " alarm_transitions=0 " not in verdict[0]


def test_checker_counts_losses_duplicates_and_not_read() -> None:
    mqtt = Stream("m", "mqtt", produced=5, read={1, 2, 3, 4}, delivered={1, 2, 3}, rows=4)
    modbus = Stream("p", "modbus", produced=10, read={2, 4, 6}, delivered={2, 4, 6}, rows=5)
    assert mqtt.lost == {4, 5}  # 4: read, never delivered; 5: acknowledged, never read
    assert mqtt.duplicates == 1
    assert modbus.lost == set() and modbus.not_read == 7 and modbus.duplicates == 0
    assert not settled({"m": mqtt, "p": modbus})
    total = summary({"m": mqtt, "p": modbus})
    assert (total["lost"], total["duplicates"], total["not_read"]) == (2, 1, 7)


def test_scenario_errors_name_the_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from otgate.supervisors.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[faults]]\nat_s = 1.0\nkind = "kill_bulkhead"\n')
    assert main(["simulate", "--scenario", str(bad)]) == 2
    assert "faults[0]: kill_bulkhead needs a target bulkhead" in capsys.readouterr().err


def test_verdict_fails_dead_devices_unclean_stops_and_failed_parts() -> None:
    live = Stream("m", "mqtt", produced=3, read={1, 2, 3}, delivered={1, 2, 3}, rows=3)
    assert verdict(Outcome({"m": live}, exit_code=0)) == []
    never_read = Stream("p", "modbus", produced=50)
    assert verdict(Outcome({"m": live, "p": never_read}, exit_code=0)) == [
        "p: nothing read or delivered"
    ]
    assert verdict(Outcome({"m": live}, exit_code=1)) == ["gateway exit code 1 (expected 0)"]
    assert verdict(Outcome({"m": live}, exit_code=0, failed=["pg"])) == ["FAILED at the end: pg"]


def test_reload_storm_files_alternate_broken_and_valid(tmp_path: Path) -> None:
    from otgate.config.load import ConfigError, load_config
    from otgate.simulations.harness.reload_storm import versions
    from otgate.simulations.harness.run import gateway_toml, modbus_devices
    from otgate.simulations.harness.scenario import Scenario

    sc = Scenario(name="storm")
    devices = modbus_devices(sc.devices)
    for dev in devices:
        dev.port = 15020  # bound when the device starts
    original = gateway_toml(sc, tmp_path / "state", "t0ken", 1883, devices, "host=127.0.0.1")
    files = versions(original, 20)
    assert [ok for _, ok in files] == [False, True] * 10
    assert files[-1] == (original, True) and files[1][0] != original  # a real change first
    for i, (text, ok) in enumerate(files):
        path = tmp_path / f"v{i}.toml"
        path.write_text(text)
        try:
            load_config(path, resolve=False)
            loaded = True
        except ConfigError:
            loaded = False
        assert loaded is ok, f"file {i}"


def test_healthy_device_polling_gaps_fail_the_verdict() -> None:
    # Counted 1..10 before the gateway's first poll (not a gap), then missed 3 of 90.
    read = set(range(11, 101)) - {40, 41, 42}
    healthy = Stream("h", "modbus", produced=100, read=read, delivered=read, max_not_read=0.02)
    assert healthy.gaps == (3, 90)
    assert verdict(Outcome({"h": healthy}, exit_code=0)) == [
        "h: missed 3 of 90 counts since its first read "
        "(more than 2%: its polling was disturbed)"
    ]
    healthy.max_not_read = 0.05
    assert verdict(Outcome({"h": healthy}, exit_code=0)) == []
    slow = Stream("s", "modbus", produced=100, read={5, 50}, delivered={5, 50})
    assert verdict(Outcome({"s": slow}, exit_code=0)) == []  # unchecked: it is the slow one


def test_more_slow_and_flapping_devices_than_devices_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[devices]\nmodbus = 1\nmodbus_slow = 1\nmodbus_flapping = 1\n')
    with pytest.raises(Exception, match="modbus_slow \\+ modbus_flapping"):
        load_scenario(bad)


def test_disk_fill_needs_a_small_filesystem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[faults]]\nat_s = 1.0\nkind = "disk_fill"\nfill_pct = [96.0]\n')
    with pytest.raises(Exception, match="disk_fill needs fill_pct and the scenario's disk_mib"):
        load_scenario(bad)


def test_broker_kill_needs_the_kafka_backend(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[faults]]\nat_s = 1.0\nkind = "broker_kill"\n')
    with pytest.raises(Exception, match="broker_kill needs log_backend = 'kafka'"):
        load_scenario(bad)
    bad.write_text('name = "x"\nlog_backend = "kafka"\n[[faults]]\nat_s = 1.0\nkind = "broker_kill"\n')
    assert load_scenario(bad).faults[0].duration_s == 3.0


def _alarm_rows(*steps: tuple[int, str, str, str]) -> list[dict]:
    """Journal rows of alarm-0's alarm: (seq, event, occurrence #, request_id)."""
    state = {"raise": "ACTIVE_UNACKED", "ack": "ACTIVE_ACKED", "clear": "NORMAL"}
    return [{"alarm_id": "alarm-0:temp:hot", "seq": seq, "event": ev, "state": state[ev],
             "occurrence_id": f"alarm-0:temp:hot#{occ}", "request_id": rid}
            for seq, ev, occ, rid in steps]


def _alarm_parts():
    from otgate.simulations.harness.alarm_peers import Acker, AlarmDevice
    from otgate.simulations.harness.scenario import Alarms

    dev = AlarmDevice("alarm-0", Alarms(devices=1), offset_s=0.0)
    dev.levels = [False, True, True, False, True, False]  # two activations
    acker = Acker(lambda: "", "t", {"alarm-0:temp:hot"}, 0.0)
    return dev, acker


def test_alarm_checker_counts_journal_losses_duplicates_and_misplaced_acks() -> None:
    from otgate.simulations.harness.alarm_check import check_alarms
    from otgate.simulations.harness.alarm_peers import AckAnswer

    dev, acker = _alarm_parts()
    o1, o2 = "alarm-0:temp:hot#1", "alarm-0:temp:hot#4"
    acker.seen = {o1: 0.0, o2: 0.0}
    acker.answers = {o: AckAnswer("applied", [], 1) for o in (o1, o2)}
    good = _alarm_rows((1, "raise", "1", ""), (2, "ack", "1", f"ack-{o1}"),
                       (3, "clear", "1", ""), (4, "raise", "4", ""),
                       (5, "ack", "4", f"ack-{o2}"), (6, "clear", "4", ""))
    rep = check_alarms([dev], good, acker, [], [])
    assert rep.counts["expected"] == rep.counts["alarm_transitions"] == 6
    assert (rep.counts["journal_lost"], rep.counts["journal_duplicates"]) == (0, 0)
    assert rep.counts["webhook_lost"] == 6  # nothing reached the webhook
    assert rep.problems == ["webhook: never delivered "
                            f"{sorted(f'alarm-0:temp:hot:{s}' for s in range(1, 7))}"]

    # the second clear lost, the first ack journalled twice (and a seq repeated)
    bad = good[:2] + good[1:5]
    rep = check_alarms([dev], bad, acker, [], [])
    assert (rep.counts["journal_lost"], rep.counts["journal_duplicates"]) == (1, 2)
    assert "alarm-0:temp:hot: 1 journal records repeat a seq" in rep.problems

    # the ack asked for activation #1 landed on activation #4: #1 never acked
    misplaced = _alarm_rows((1, "raise", "1", ""), (2, "clear", "1", ""),
                            (3, "raise", "3", ""), (4, "ack", "3", f"ack-{o1}"),
                            (5, "clear", "3", ""))
    acker.seen = {o1: 0.0, "alarm-0:temp:hot#3": 0.0}
    rep = check_alarms([dev], misplaced, acker, [], [])
    assert ("alarm-0:temp:hot: ack request 'ack-alarm-0:temp:hot#1' applied to "
            "alarm-0:temp:hot#3 (seq 4)") in rep.problems
    assert rep.counts["journal_lost"] == 1  # #1's ack: answered applied, not in the journal


def test_alarm_checker_unseen_activation_is_not_expected_to_be_acked() -> None:
    from otgate.simulations.harness.alarm_check import check_alarms
    from otgate.simulations.harness.alarm_peers import AckAnswer

    dev, acker = _alarm_parts()
    o2 = "alarm-0:temp:hot#3"
    acker.seen = {o2: 0.0}  # #1 came and went while the gateway was away
    rows = _alarm_rows((1, "raise", "1", ""), (2, "clear", "1", ""), (3, "raise", "3", ""),
                       (4, "ack", "3", f"ack-{o2}"), (5, "clear", "3", ""))
    rep = check_alarms([dev], rows, acker, [], [])
    assert (rep.counts["acks_unseen"], rep.counts["expected"], rep.counts["journal_lost"]) \
        == (1, 5, 0)
    acker.seen["alarm-0:temp:hot#1"] = 0.0  # seen, but its ack never answered: a problem
    rep = check_alarms([dev], rows, acker, [], [])
    assert "alarm-0:temp:hot#1: the acker's ack was never answered (0 attempts)" in rep.problems
    # refused by the evaluator: raised again before the ack arrived (not expected, no problem)
    over = {"alarm-0:temp:hot": "activation alarm-0:temp:hot#1 is over (now alarm-0:temp:hot#3)"}
    acker.answers["alarm-0:temp:hot#1"] = AckAnswer("refused", [], 2, over)
    rep = check_alarms([dev], rows, acker, [], [])
    assert (rep.counts["acks_too_late"], rep.counts["expected"]) == (1, 5)
    assert not [p for p in rep.problems if not p.startswith("webhook")]
    acker.answers["alarm-0:temp:hot#1"] = AckAnswer("refused", [], 1, {
        "alarm-0:temp:hot": "already acknowledged"})  # any other refusal: a lost ack
    rep = check_alarms([dev], rows, acker, [], [])
    assert rep.counts["journal_lost"] == 1


def test_webhook_resend_is_a_duplicate_only_after_a_confirmed_delivery() -> None:
    from otgate.simulations.harness.alarm_check import AlarmReport, check_webhook
    from otgate.simulations.harness.alarm_peers import Delivery

    keys = {"a:1", "a:2", "a:3", "a:4"}
    deliveries = [
        Delivery("a:1", 1.0, True),
        Delivery("a:2", 2.0, False),  # the router timed out before the answer: resent
        Delivery("a:2", 3.5, True),
        Delivery("a:3", 4.0, True),  # confirmed, the gateway killed before its checkpoint
        Delivery("a:3", 9.0, True),
        Delivery("a:1", 10.0, True),  # confirmed (and checkpointed) long before the kill
    ]
    rep = AlarmReport()
    check_webhook(keys, deliveries, kills=[4.5], rep=rep, window_s=2.0)
    assert rep.counts == {"webhook_delivered": 3, "webhook_lost": 1,
                          "webhook_duplicates": 1, "webhook_resent": 3}
    assert rep.problems == ["webhook: never delivered ['a:4']",
                            "webhook: a:1 delivered again 9.0s after a confirmed delivery "
                            "(nearest router kill +3.5s)"]
    # deliveries are logged when answered: a slow first one is logged after its resend
    rep = AlarmReport()
    check_webhook({"a:1"}, [Delivery("a:1", 3.0, True), Delivery("a:1", 1.0, False)], [], rep, 2.0)
    assert (rep.counts["webhook_duplicates"], rep.counts["webhook_resent"]) == (0, 1)


def test_webhook_faults_need_the_alarms_section(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[faults]]\nat_s = 1.0\nkind = "webhook_down"\n')
    with pytest.raises(Exception, match="webhook_down needs the scenario's \\[alarms\\]"):
        load_scenario(bad)
    bad.write_text('name = "x"\n[alarms]\n[[faults]]\nat_s = 1.0\nkind = "webhook_down"\n')
    assert load_scenario(bad).alarms.devices == 2
