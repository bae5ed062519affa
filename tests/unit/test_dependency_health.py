"""DependencyHealth: one line down (with the reason), one line back (with the failed attempts),
"back" only when an operation succeeded, and the state in status and metrics."""
import logging

import pytest

from msd.roles.runtime.process import DependencyHealth


class FakeContext:
    name = "exits"

    def __init__(self):
        self.status = {}

    def set_status(self, **fields):
        self.status.update(fields)


@pytest.fixture
def health(caplog):
    caplog.set_level(logging.INFO, logger="msd.test-deps")
    ctx = FakeContext()
    return ctx, DependencyHealth(ctx, logging.getLogger("msd.test-deps")), caplog


def lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "msd.test-deps"]


def test_one_line_down_one_line_back_with_the_attempts_between(health):
    ctx, deps, caplog = health
    deps.succeeded("database")                        # first contact: nothing to say
    for reason in ("refused", "refused", "does not accept connections"):
        deps.failed("database", reason)
    assert ctx.status["dependencies"]["database"] == {"up": False, "reason": "does not accept connections",
                                                      "failed_attempts": 3}
    deps.succeeded("database")
    deps.succeeded("database")
    assert lines(caplog)[0] == "database down: refused"
    assert lines(caplog)[1].startswith("database back after 3 failed attempts over ")
    assert len(lines(caplog)) == 2
    assert ctx.status["dependencies"]["database"]["up"] is True


def test_dependencies_are_separate(health):
    ctx, deps, caplog = health
    deps.succeeded("broker")
    deps.failed("database", "gone")
    assert deps.is_down("database") and not deps.is_down("broker") and deps.reason("database") == "gone"
    assert {name: s["up"] for name, s in ctx.status["dependencies"].items()} == {"broker": True, "database": False}


def test_a_reporter_is_what_edges_call(health):
    ctx, deps, _ = health
    report = deps.reporter("ws-gateway")
    report(False, "401 Invalid API key")
    assert deps.reason("ws-gateway") == "401 Invalid API key"
    report(True, None)
    assert not deps.is_down("ws-gateway")
