"""The supervisor loop driven by a hand-written fake host and a manual clock (no processes)."""
import signal
from collections import deque

import pytest
import yaml

from msd.config import load_config
from msd.supervisor.spawn import EXIT_CANCELLED, EXIT_OK
from msd.supervisor.arbiter import Arbiter
from msd.supervisor.children import State
from msd.supervisor.inbox import Event

BASE = {"supervisor": {"backoff_initial_s": 0.1, "backoff_max_s": 1.0, "fatal_after_failures": 3,
                       "stable_after_s": 10, "heartbeat_interval_s": 1, "heartbeat_timeout_s": 5,
                       "stop_deadline_s": 4},
        "metrics": {"port": 0}}


class FakeHandle:
    def __init__(self, name, pid):
        self.name, self.pid = name, pid
        self.inbox = deque()
        self.code = None
        self.signals = []


class FakeHost:
    """Records what the arbiter asks for; children exit only when a test says so (or on SIGKILL)."""

    def __init__(self):
        self.spawned = []
        self.next_pid = 100

    def make_queue(self, maxsize):
        return object()

    def spawn(self, name, module, config, queues, args=None):
        self.next_pid += 1
        handle = FakeHandle(name, self.next_pid)
        handle.args, handle.queues = args or {}, queues
        self.spawned.append(handle)
        return handle

    def kill(self, handle, sig=signal.SIGTERM):
        handle.signals.append(sig)
        if sig == signal.SIGKILL:
            handle.code = -signal.SIGKILL

    def exit_code(self, handle):
        return handle.code

    def wait(self, handles, extra, timeout):
        pass

    def release(self, handle):
        handle.released = True

    def send(self, handle, message):
        handle.sent = getattr(handle, "sent", []) + [message]

    def receive(self, handle):
        out = list(handle.inbox)
        handle.inbox.clear()
        return out

    def latest(self, name):
        return [h for h in self.spawned if h.name == name][-1]


class FakeNotifier:
    def __init__(self):
        self.sent = []

    def __getattr__(self, name):
        return lambda *args: self.sent.append((name, *args))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def env(tmp_path):
    path = tmp_path / "msd.yaml"
    path.write_text(yaml.safe_dump(BASE))
    host, notifier, clock = FakeHost(), FakeNotifier(), Clock()
    arbiter = Arbiter(load_config(path, env={}), host, notifier, clock=clock, wall=clock)
    arbiter.config_path = path
    for name in ("consumer", "signaller", "exits"):
        arbiter.start_child(name)
    return arbiter, host, notifier, clock


def boot_all(arbiter, host):
    for name in ("consumer", "signaller", "exits"):
        host.latest(name).inbox.append(("booted", {}))
    arbiter.turn(0)


def states(arbiter):
    return {n: r.state for n, r in arbiter.records.items()}


def test_ready_is_sent_once_all_roles_booted(env):
    arbiter, host, notifier, _ = env
    arbiter.turn(0)
    assert ("ready",) not in [s[:1] for s in notifier.sent]
    boot_all(arbiter, host)
    arbiter.turn(0)
    assert set(states(arbiter).values()) == {State.RUNNING}
    assert [s[0] for s in notifier.sent].count("ready") == 1
    assert notifier.sent[-1] == ("watchdog",)


def test_killed_role_respawns_after_backoff_and_others_are_untouched(env):
    arbiter, host, _, clock = env
    boot_all(arbiter, host)
    clock.now += 60
    for name in ("consumer", "signaller", "exits"):
        host.latest(name).inbox.append(("heartbeat", {"progress_age_s": 0.1, "status": {}}))
    others = {n: host.latest(n).pid for n in ("signaller", "exits")}
    host.latest("consumer").code = -9
    arbiter.turn(0)
    assert arbiter.records["consumer"].state is State.BACKOFF
    assert arbiter.records["consumer"].last_exit == "was killed by SIGKILL"
    clock.now += 0.1
    arbiter.turn(0)
    assert arbiter.records["consumer"].state is State.STARTING
    assert arbiter.records["consumer"].restarts == 1
    assert {n: host.latest(n).pid for n in others} == others
    assert all(not host.latest(n).signals for n in others)


def test_repeated_fast_failures_make_a_role_fatal_and_withhold_the_watchdog(env):
    arbiter, host, notifier, clock = env
    boot_all(arbiter, host)
    for _ in range(3):
        host.latest("exits").code = 1
        arbiter.turn(0)
        clock.now += 1.0
        arbiter.turn(0)
    assert arbiter.records["exits"].state is State.FATAL
    spawned = len(host.spawned)
    notifier.sent.clear()
    clock.now += 100
    arbiter.turn(0)
    assert len(host.spawned) == spawned
    assert ("watchdog",) not in notifier.sent


def test_silent_child_is_killed_as_hung(env):
    arbiter, host, _, clock = env
    boot_all(arbiter, host)
    clock.now += 6
    arbiter.turn(0)
    assert signal.SIGKILL in host.latest("consumer").signals


def test_heartbeat_from_a_stuck_main_loop_does_not_count(env):
    arbiter, host, _, clock = env
    boot_all(arbiter, host)
    clock.now += 4
    host.latest("signaller").inbox.append(("heartbeat", {"progress_age_s": 30.0, "status": {}}))
    arbiter.turn(0)
    clock.now += 2
    arbiter.turn(0)
    assert signal.SIGKILL in host.latest("signaller").signals


def test_newer_training_request_cancels_the_running_one_and_latest_wins(env):
    arbiter, host, _, _ = env
    boot_all(arbiter, host)
    first = arbiter.command_retrain(reason="schedule")
    trainer1 = host.latest("trainer")
    second = arbiter.command_retrain(reason="data threshold")
    third = arbiter.command_retrain(reason="manual")
    assert trainer1.signals == [signal.SIGTERM]            # one SIGTERM, not one per request
    assert len([h for h in host.spawned if h.name == "trainer"]) == 1
    trainer1.code = EXIT_CANCELLED
    arbiter.turn(0)
    trainer2 = host.latest("trainer")
    assert trainer2 is not trainer1
    assert trainer2.args["request"]["id"] == third["request_id"]
    trainer2.code = EXIT_OK
    arbiter.turn(0)
    outcomes = {r["request_id"]: r["outcome"] for r in arbiter.trainer.history}
    assert outcomes == {first["request_id"]: "cancelled", second["request_id"]: "superseded",
                        third["request_id"]: "succeeded"}
    assert trainer1.queues == {} and trainer2.queues == {}


def test_trainer_that_ignores_sigterm_is_killed_after_the_stop_deadline(env):
    arbiter, host, _, clock = env
    arbiter.command_retrain()
    arbiter.command_retrain()
    clock.now += 4.5
    arbiter.turn(0)
    assert host.spawned[-1].name == "trainer"
    assert [h for h in host.spawned if h.name == "trainer"][0].signals == [signal.SIGTERM, signal.SIGKILL]


def test_reload_restarts_only_the_changed_role(env):
    arbiter, host, notifier, _ = env
    boot_all(arbiter, host)
    before = {n: host.latest(n) for n in ("consumer", "signaller", "exits")}
    arbiter.config_path.write_text(yaml.safe_dump({**BASE, "consumer": {"prefetch": 7}}))
    result = arbiter.command_reload()
    assert result == {"applied": True, "changed_sections": ["consumer"], "applied_live": [],
                      "restarted": ["consumer"]}
    assert before["consumer"].signals == [signal.SIGTERM]
    before["consumer"].code = 0
    arbiter.turn(0)
    assert host.latest("consumer") is not before["consumer"]
    assert arbiter.records["consumer"].failures == 0
    assert host.latest("consumer").pid != before["consumer"].pid
    assert not before["signaller"].signals and not before["exits"].signals
    assert arbiter.config.consumer.prefetch == 7
    kinds = [s[0] for s in notifier.sent]
    assert kinds.index("reloading") < len(kinds) - 1 - kinds[::-1].index("ready")


def test_invalid_reload_keeps_running_config_and_reports_it(env):
    arbiter, host, notifier, _ = env
    boot_all(arbiter, host)
    arbiter.config_path.write_text(yaml.safe_dump({**BASE, "metrics": {"port": -5}}))
    result = arbiter.command_reload()
    assert result["applied"] is False and "metrics.port" in result["error"]
    assert arbiter.config.metrics.port == 0
    assert all(not host.latest(n).signals for n in ("consumer", "signaller", "exits"))
    status = arbiter.command_status()
    assert "metrics.port" in status["daemon"]["config_error"]["message"]
    arbiter.turn(0)
    assert any(s[0] == "status" and "config reload failed" in s[1] for s in notifier.sent)
    assert arbiter.health[0] is False


def test_stop_goes_in_reverse_order_one_child_at_a_time(env):
    arbiter, host, notifier, _ = env
    boot_all(arbiter, host)
    arbiter.command_stop()
    order = []
    for expected in ("exits", "signaller", "consumer"):
        arbiter.turn(0)
        signalled = [n for n in ("consumer", "signaller", "exits") if host.latest(n).signals]
        assert set(signalled) - set(order) == {expected}
        order.append(expected)
        host.latest(expected).code = 0
    arbiter.turn(0)
    assert arbiter.exit_code == 0
    assert ("stopping",) in notifier.sent


def test_stop_deadline_escalates_to_sigkill(env):
    arbiter, host, _, clock = env
    boot_all(arbiter, host)
    arbiter.command_stop()
    arbiter.turn(0)
    clock.now += 5
    arbiter.turn(0)
    arbiter.turn(0)
    assert all(signal.SIGKILL in host.latest(n).signals for n in ("consumer", "signaller", "exits"))
    assert arbiter.exit_code == 1


def test_second_stop_kills_at_once(env):
    arbiter, host, _, _ = env
    boot_all(arbiter, host)
    arbiter.command_stop()
    arbiter.turn(0)
    arbiter.command_stop()
    arbiter.turn(0)
    assert all(signal.SIGKILL in host.latest(n).signals for n in ("consumer", "signaller", "exits"))


def test_training_refused_while_stopping(env):
    arbiter, _, _, _ = env
    arbiter.command_stop()
    with pytest.raises(RuntimeError, match="stopping"):
        arbiter.command_retrain()


def test_unknown_control_command_gets_an_error_reply(env):
    import queue
    from msd.supervisor.inbox import Event
    arbiter, _, _, _ = env
    slot = queue.SimpleQueue()
    arbiter.dispatch(Event("control", {"request": {"cmd": "dance", "args": {}}}, reply=slot))
    assert slot.get_nowait() == {"v": 1, "ok": False, "error": "unknown command 'dance'"}


def test_last_messages_of_a_dead_child_are_read_before_its_pipe_is_closed(env, caplog):
    """Regression: the reaper closed the pipe first, losing the crash log of a trainer."""
    arbiter, host, _, clock = env
    arbiter.command_retrain()
    trainer = host.latest("trainer")
    # The child writes its last words and exits after the loop has pumped the pipes this turn.
    trainer.inbox.append(("event", {"kind": "train_result", "status": "failed", "error": "boom"}))
    trainer.code = 1
    arbiter.reap(clock.now)
    assert arbiter.trainer.history[0]["result"]["error"] == "boom"
    assert trainer.released


def test_live_sections_are_sent_to_the_running_child_instead_of_a_restart(env):
    arbiter, host, _, _ = env
    boot_all(arbiter, host)
    signaller = host.latest("signaller")
    arbiter.config_path.write_text(yaml.safe_dump({**BASE, "signaller": {"global_rate": {"rate_per_s": 5, "burst": 2}}}))
    result = arbiter.command_reload()
    # exits reads signaller.signals_queue, so it is sent the new config too
    assert result["applied_live"] == ["signaller", "exits"] and result["restarted"] == []
    assert not signaller.signals
    kind, payload = signaller.sent[-1]
    assert kind == "config" and payload["config"].signaller.global_rate.burst == 2


def test_live_section_change_restarts_a_child_that_is_not_running(env):
    arbiter, host, _, _ = env
    boot_all(arbiter, host)
    host.latest("exits").code = 1
    arbiter.turn(0)
    arbiter.config_path.write_text(yaml.safe_dump({**BASE, "exits": {"poll_interval_s": 2}}))
    assert arbiter.command_reload()["restarted"] == ["exits"]


def test_a_finished_training_run_tells_the_running_signaller_to_reload_its_models(env):
    arbiter, host, _, _ = env
    boot_all(arbiter, host)
    arbiter.command_retrain()
    host.latest("trainer").code = EXIT_OK
    arbiter.turn(0)
    assert host.latest("signaller").sent[-1][0] == "models_changed"


def test_models_changed_command_is_forwarded_and_says_when_nobody_listens(env):
    arbiter, host, _, _ = env
    assert arbiter.command_models_changed("s1") == {"notified": False}     # signaller not booted yet
    boot_all(arbiter, host)
    assert arbiter.command_models_changed("s1", "rollback to v3") == {"notified": True}
    assert host.latest("signaller").sent[-1] == ("models_changed", {"strategy": "s1", "reason": "rollback to v3"})


@pytest.mark.parametrize("code", [EXIT_OK, EXIT_CANCELLED, 1])
def test_signaller_learns_of_version_changes_whatever_the_trainers_exit(env, code):
    """Regression (issue 9, defect 5): a run that promoted strategy A and was then cancelled
    while training B left A active in the database but unknown to the signaller."""
    arbiter, host, _, _ = env
    boot_all(arbiter, host)
    arbiter.command_retrain()
    host.latest("trainer").code = code
    arbiter.turn(0)
    assert host.latest("signaller").sent[-1][0] == "models_changed"


def _train_event(strategy, reason, repeat=False):
    return Event("event", {"child": "signaller", "payload": {"kind": "train_request", "reason": reason,
                                                              "strategy": strategy, "repeat": repeat}})


def test_cancelled_broader_request_is_merged_into_the_next():
    """Regression (issue 9, defect 5): one strategy's data threshold replaced a cancelled daily
    run of all strategies, which then waited a day."""
    from msd.supervisor.trainer_slot import TrainerSlot
    slot = TrainerSlot()
    daily = slot.new_request("schedule", None, "signaller", 0.0)
    narrow = slot.new_request("data threshold", "s1", "signaller", 1.0)
    slot.current = daily
    slot.queue_next(narrow)
    slot.cancel("superseded", 1.0)
    assert slot.pending.id == narrow.id and slot.pending.strategies is None
    assert slot.pending.as_dict()["strategy"] is None and "merged with request 1" in slot.pending.reason
    # two single-strategy scopes merge into both
    slot2 = TrainerSlot()
    a, b = (slot2.new_request(r, s, "x", 0.0) for r, s in (("a", "s1"), ("b", "s2")))
    slot2.current = a
    slot2.queue_next(b)
    slot2.cancel("superseded", 0.0)
    assert slot2.pending.strategies == ("s1", "s2") and slot2.pending.as_dict()["strategies"] == ["s1", "s2"]


def test_a_cancelled_schedule_run_is_resumed_with_its_full_scope(env):
    arbiter, host, _, _ = env
    boot_all(arbiter, host)
    arbiter.dispatch(_train_event(None, "scheduled retraining"))
    first = host.latest("trainer")
    arbiter.dispatch(_train_event("s1", "data threshold"))
    assert first.signals == [signal.SIGTERM]
    first.code = EXIT_CANCELLED
    arbiter.turn(0)
    request = host.latest("trainer").args["request"]
    assert request["strategies"] is None and request["strategy"] is None


def test_a_repeated_ask_never_cancels_a_run_that_covers_it(env):
    """Regression (issue 9, defect 5): a quality request lost to a cancel was never sent again,
    and a repeated data-threshold ask cancelled real training."""
    arbiter, host, _, _ = env
    boot_all(arbiter, host)
    arbiter.dispatch(_train_event("s1", "quality degradation"))
    running = host.latest("trainer")
    arbiter.dispatch(_train_event("s1", "quality degradation", repeat=True))
    arbiter.dispatch(_train_event(None, "data threshold", repeat=True))      # not covered: all > s1
    assert running.signals == [signal.SIGTERM]
    arbiter.dispatch(_train_event("s1", "quality degradation", repeat=True))   # covered by the waiting one
    assert len(arbiter.trainer.history) == 0 and arbiter.trainer.pending.strategies is None
    running.code = EXIT_CANCELLED
    arbiter.turn(0)
    assert host.latest("trainer").args["request"]["strategies"] is None
