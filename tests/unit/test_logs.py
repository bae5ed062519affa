"""Log lines: JSON or text (auto = text on a terminal), pika kept quiet, floods summarised."""
import io
import json
import logging
import os

import pytest

from msd.logs import LineBudget, QuietLibraries, make_handler, resolve_format


@pytest.fixture
def terminal():
    leader, follower = os.openpty()
    stream = os.fdopen(follower, "w")
    yield stream
    stream.close()
    os.close(leader)


def test_auto_is_text_on_a_terminal_and_json_otherwise(terminal):
    assert resolve_format("auto", terminal) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    r, w = os.pipe()
    with os.fdopen(w, "w") as pipe:
        assert resolve_format("auto", pipe) == "json"
    os.close(r)
    assert resolve_format("json", terminal) == "json" and resolve_format("text", io.StringIO()) == "text"


def record(name="msd.consumer", level=logging.WARNING, msg="broker down: refused", **extra):
    rec = logging.makeLogRecord({"name": name, "levelno": level, "levelname": logging.getLevelName(level),
                                 "msg": msg, "args": None, **extra})
    return rec


def test_json_lines_carry_role_pid_and_extras():
    out = io.StringIO()
    make_handler(out, "json").handle(record(role="consumer", dependency="broker"))
    line = json.loads(out.getvalue())
    assert (line["level"], line["role"], line["message"], line["dependency"]) == (
        "WARNING", "consumer", "broker down: refused", "broker")
    assert "pid" in line and "time" in line


def test_text_lines_are_readable():
    out = io.StringIO()
    make_handler(out, "text").handle(record(role="exits", dependency="database", trace_id="t-1"))
    text = out.getvalue()
    assert "WARNING" in text and "exits" in text and "broker down: refused" in text
    assert "dependency=database" in text and "trace_id=t-1" in text and not text.startswith("{")


@pytest.mark.parametrize("root_level, shown", [(logging.INFO, False), (logging.DEBUG, True)])
def test_pika_connection_errors_never_reach_the_log_at_error(root_level, shown):
    root = logging.getLogger()
    old = root.level
    root.setLevel(root_level)
    try:
        rec = record(name="pika.adapters.utils.connection_workflow", level=logging.ERROR,
                     msg="AMQPConnector - reporting failure: AMQPConnectorSocketConnectError")
        assert QuietLibraries().filter(rec) is shown
        assert rec.levelno == logging.DEBUG
        ours = record(level=logging.ERROR)
        assert QuietLibraries().filter(ours) and ours.levelno == logging.ERROR
    finally:
        root.setLevel(old)


def test_line_budget_lets_a_few_through_then_summarises_each_window():
    now = [0.0]
    budget = LineBudget(per_window=2, window_s=10, clock=lambda: now[0])
    assert [budget.allow("q") for _ in range(5)] == [True, True, False, False, False]
    assert budget.allow("other") is True
    assert budget.summaries() == []
    now[0] = 10.0
    assert budget.summaries() == [("q", 3)]
    assert budget.allow("q") is True and budget.summaries() == []
