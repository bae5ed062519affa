"""The child state machine, as tables of transitions."""
import pytest

from msd.supervisor import children as ch
from msd.supervisor.children import State

POLICY = ch.RestartPolicy(backoff_initial_s=0.1, backoff_max_s=2.0, stable_after_s=10.0,
                          fatal_after_failures=4, heartbeat_timeout_s=5.0, boot_timeout_s=30.0)


def running(started_at=0.0, failures=0):
    rec = ch.started(ch.ChildRecord("consumer", failures=failures), pid=42, now=started_at)
    return ch.booted(rec, started_at + 0.5)


@pytest.mark.parametrize("failures, delay", [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (6, 2.0), (20, 2.0)])
def test_backoff_grows_and_is_capped(failures, delay):
    assert ch.backoff_delay(failures, POLICY) == pytest.approx(delay)


@pytest.mark.parametrize("ran_for, prior_failures, state, failures", [
    (60.0, 3, State.BACKOFF, 1),     # a long run resets the count: this is the first failure
    (1.0, 0, State.BACKOFF, 1),
    (1.0, 2, State.BACKOFF, 3),
    (1.0, 3, State.FATAL, 4),        # the fourth fast failure in a row is fatal
])
def test_exit_while_running(ran_for, prior_failures, state, failures):
    rec = ch.exited(running(failures=prior_failures), "was killed by SIGKILL", ran_for, POLICY)
    assert (rec.state, rec.failures, rec.pid) == (state, failures, None)
    assert rec.last_exit == "was killed by SIGKILL"


def test_backoff_child_is_due_only_after_its_delay():
    rec = ch.exited(running(), "exited with code 1", 60.0, POLICY)
    assert not ch.due_to_start(rec, 60.05)
    assert ch.due_to_start(rec, 60.1)


def test_exit_after_stop_request_is_stopped_not_a_failure():
    rec = ch.exited(ch.stopping(running()), "exited with code 0", 1.0, POLICY)
    assert (rec.state, rec.failures) == (State.STOPPED, 0)


def test_exit_after_restart_request_is_due_at_once_and_not_a_failure():
    rec = ch.exited(ch.stopping(running(failures=2), restart=True), "exited with code 0", 1.0, POLICY)
    assert (rec.state, rec.failures) == (State.BACKOFF, 0)
    assert ch.due_to_start(rec, 1.0)


def test_restarts_counted_only_for_respawns():
    first = ch.after_start(ch.started(ch.ChildRecord("x"), 1, 0.0))
    assert first.restarts == 0
    again = ch.after_start(ch.started(ch.exited(running(), "exited with code 1", 1.0, POLICY), 2, 2.0))
    assert again.restarts == 1


@pytest.mark.parametrize("rec_factory, now, hung", [
    (lambda: running(), 5.4, False),
    (lambda: running(), 5.6, True),                                      # heartbeat silent > 5 s
    (lambda: ch.heartbeat(running(), 5.0, {}), 9.9, False),
    (lambda: ch.started(ch.ChildRecord("x"), 1, 0.0), 29.0, False),
    (lambda: ch.started(ch.ChildRecord("x"), 1, 0.0), 31.0, True),       # never booted
    (lambda: ch.exited(running(), "exited with code 1", 1.0, POLICY), 100.0, False),
])
def test_unresponsive(rec_factory, now, hung):
    assert (ch.unresponsive_reason(rec_factory(), now, POLICY) is not None) is hung


def test_booted_ignored_unless_starting():
    rec = ch.exited(running(), "exited with code 1", 1.0, POLICY)
    assert ch.booted(rec, 2.0) == rec
