"""msd-ctl's model commands without a database: argument parsing, tables, daemon replies."""
import argparse
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from msd import ctl, ctl_models
from msd.ctl_models import (CtlFailure, database_location, files_state, render_compare,
                            render_versions, version_number)
from msd.supervisor import protocol


def parse(*argv):
    return ctl._parser().parse_args(list(argv))


@pytest.mark.parametrize("text, number", [("v3", 3), ("3", 3), ("V120", 120), (" v7 ", 7)])
def test_version_accepts_vN_and_N(text, number):
    assert version_number(text) == number


@pytest.mark.parametrize("text", ["v0", "0", "v", "three", "v-1", "3.0", ""])
def test_version_refuses_anything_else_naming_it(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected vN or N"):
        version_number(text)


def test_versions_takes_json_before_or_after_the_command():
    assert parse("versions", "--json", "--strategy", "s").json is True
    assert parse("--json", "versions").json is True
    assert parse("versions").json is False and parse("versions").strategy is None


def test_compare_and_rollback_parse_versions():
    args = parse("compare", "--strategy", "s", "v3", "120")
    assert (args.strategy, args.a, args.b, args.on) == ("s", 3, 120, None)
    args = parse("rollback", "--strategy", "s", "--to", "v5", "--reason", "degraded")
    assert (args.strategy, args.to, args.reason) == ("s", 5, "degraded")


@pytest.mark.parametrize("argv", [
    ["compare", "v1", "v2"],                          # --strategy is required
    ["compare", "--strategy", "s", "v1"],             # two versions
    ["rollback", "--strategy", "s"],                  # --to is required
    ["rollback", "--strategy", "s", "--to", "x5"],
    ["versions", "--on", "3"],                        # only compare scores on a window
])
def test_bad_arguments_exit_2(argv, capsys):
    assert ctl.main(argv) == ctl.EXIT_USAGE
    assert "usage: msd-ctl" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["versions"], ["compare", "--strategy", "s", "1", "2"],
                                     ["rollback", "--strategy", "s", "--to", "v1"]])
def test_socket_alone_is_not_enough_for_database_commands(command, capsys, tmp_path):
    assert ctl.main(["-s", str(tmp_path / "msd.sock"), *command]) == ctl.EXIT_USAGE
    assert "give the config file with -c" in capsys.readouterr().err


def test_an_unreadable_config_file_exits_2_naming_it(capsys, tmp_path):
    missing = tmp_path / "nope.yaml"
    assert ctl.main(["-c", str(missing), "versions"]) == ctl.EXIT_USAGE
    assert str(missing) in capsys.readouterr().err


@pytest.mark.parametrize("dsn, shown", [
    ("postgresql://msd@db.internal:6543/trading", "db.internal:6543/trading"),
    ("postgresql://msd:hunter2@db/x", "db:5432/x"),
    ("postgres://127.0.0.1/msd", "127.0.0.1:5432/msd"),
])
def test_database_location_never_shows_user_or_password(dsn, shown):
    assert database_location(dsn) == shown


def version(number, *, active=False, pruned=False, quality=None, **extra):
    return {"version": number, "created_at": "2026-11-24T01:02:03.456+00:00", "is_active": active,
            "labelled_rows": 1000 + number, "promoted_when_trained": active,
            "gate_reasons": ["pass: a", "pass: b"] if active else ["fail: accuracy 0.61"],
            "files": "pruned" if pruned else "present",
            "quality": {"validation": quality} if quality is not None else {}, **extra}


def test_versions_table_has_metrics_flags_files_and_gate():
    report = {"s1": [version(1, pruned=True, quality={"accuracy": 0.61}),
                     version(2, active=True, quality={"accuracy": 0.8, "balanced_accuracy": 0.79,
                                                      "log_loss": 0.45, "brier": 0.15,
                                                      "majority.accuracy": 0.52,
                                                      "naive.accuracy": 0.55})],
              "s2": []}
    lines = render_versions(report).splitlines()

    assert lines[0] == "strategy s1: 2 version(s), active v2"
    assert lines[1].split()[:4] == ["VER", "CREATED", "(UTC)", "ACT"]
    v1, v2 = lines[2].split(), lines[3].split()
    assert v1[:4] == ["v1", "2026-11-24", "01:02", "1001"] and v1[4] == "0.6100"
    assert v1[5:10] == ["-"] * 5 and v1[10:12] == ["no", "pruned"]
    assert " ".join(v1[12:]) == "fail: accuracy 0.61"
    assert v2[:5] == ["v2", "2026-11-24", "01:02", "*", "1002"]
    assert v2[5:11] == ["0.8000", "0.7900", "0.4500", "0.1500", "0.5200", "0.5500"]
    assert " ".join(v2[13:]) == "pass: a; pass: b"
    assert lines[4] == "strategy s2: 0 version(s), active none (warm-up)"


def test_versions_table_without_strategies_says_so():
    assert render_versions({}).startswith("no strategies")


def test_compare_table_names_the_one_window_both_were_scored_on():
    result = {"strategy_id": "s",
              "window": {"of_version": 9, "from": "2025-11-20T10:00:00+00:00",
                         "to": "2025-11-20T16:00:00+00:00", "decisions": 360},
              "a": {"version": 3, "metrics": {"accuracy": 0.7, "brier": 0.2}, "is_active": False},
              "b": {"version": 9, "metrics": {"accuracy": 0.8, "calibration_error": 0.1},
                    "is_active": True},
              "difference": {"accuracy": 0.1}}
    lines = render_compare(result).splitlines()

    assert lines[0].startswith("strategy s: v3 vs v9 rescored on the same 360 decisions, v9's "
                               "validation window 2025-11-20T10:00:00+00:00")
    assert lines[1].split() == ["METRIC", "v3", "v9", "*", "DIFFERENCE"]
    assert [l.split() for l in lines[2:]] == [["accuracy", "0.7000", "0.8000", "+0.1000"],
                                               ["brier", "0.2000", "-", "-"],
                                               ["calibration_error", "-", "0.1000", "-"]]


def test_files_state(tmp_path):
    info = SimpleNamespace(path=str(tmp_path), files_pruned_at=None)
    assert files_state(info) == "present"
    assert files_state(SimpleNamespace(path=str(tmp_path / "gone"), files_pruned_at=None)) == "missing"
    pruned = SimpleNamespace(path=str(tmp_path), files_pruned_at=datetime.now(timezone.utc))
    assert files_state(pruned) == "pruned"


def asker(kind, payload):
    requests = []

    def ask(request):
        requests.append(request)
        return kind, payload
    return ask, requests


@pytest.mark.parametrize("kind, payload, expected", [
    ("not_running", "no answer on /run/msd.sock", "msd is not running; the database change is done"),
    ("ok", protocol.ok({"notified": True}), "the signaller switches to v3 now"),
    ("ok", protocol.ok({"notified": False}), "its signaller is not; it will load v3 when it starts"),
])
def test_daemon_told_or_not_running_is_success(kind, payload, expected, capsys):
    ask, requests = asker(kind, payload)

    assert ctl_models._tell_daemon(ask, "s", 3) == 0
    assert expected in capsys.readouterr().out
    assert requests == [protocol.request("models_changed", strategy="s", reason="rollback to v3")]


@pytest.mark.parametrize("kind, payload, why", [
    ("ok", protocol.error("unknown command 'models_changed'"), "unknown command"),
    ("unreachable", "timed out", "timed out"),
    ("error", "protocol version 2", "protocol version 2"),
])
def test_daemon_that_cannot_be_told_is_an_error_saying_the_db_changed(kind, payload, why):
    ask, _ = asker(kind, payload)

    with pytest.raises(CtlFailure, match="database change is done") as caught:
        ctl_models._tell_daemon(ask, "s", 3)
    assert why in str(caught.value) and caught.value.code == 1

