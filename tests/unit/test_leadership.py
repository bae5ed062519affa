"""Leadership: the lease decision table, the `leadership` config section, and the supervisor's
role switching driven by `lease` events (fake host, manual clock: no processes, no database)."""
import signal

import pytest
import yaml

from msd.config import load_config
from msd.errors import ConfigError
from msd.roles.lease.decide import (Action, Belief, Result, Role, Timing, after, expire, next_action,
                                    wait_before_next)
from msd.supervisor.arbiter import Arbiter
from msd.supervisor.children import State
from msd.supervisor.leadership import LEASE
from msd.supervisor.status import status_snapshot
from tests.unit.test_arbiter import BASE, Clock, FakeHost, FakeNotifier

T = Timing(renew_s=1.0, failover_s=5.0, lost_after_s=3.0)
LEADING = Belief(Role.LEADER, epoch=7, renewed_at=100.0)
STANDBY = Belief()


# --- the decision table ------------------------------------------------------------------------

@pytest.mark.parametrize("belief, now, action", [
    (STANDBY, 100.0, Action.ACQUIRE),
    (LEADING, 100.5, Action.RENEW),
    (Belief(Role.LEADER, 7, 100.0, step_down=True), 100.5, Action.RELEASE),
    (Belief(hold_off_until=105.0), 104.9, Action.WAIT),
    (Belief(hold_off_until=105.0), 105.0, Action.ACQUIRE),
])
def test_next_action(belief, now, action):
    assert next_action(belief, now) is action


@pytest.mark.parametrize("belief, action, result, epoch, now, role, event", [
    # standby takes a free or expired lease: leader of the new epoch
    (STANDBY, Action.ACQUIRE, Result.DONE, 8, 101.0, Role.LEADER, "acquired"),
    # another instance's lease is valid, or the database is down: still standby, nothing to tell
    (STANDBY, Action.ACQUIRE, Result.REFUSED, None, 101.0, Role.STANDBY, None),
    (STANDBY, Action.ACQUIRE, Result.FAILED, None, 101.0, Role.STANDBY, None),
    (LEADING, Action.RENEW, Result.DONE, 7, 101.0, Role.LEADER, None),
    # the row moved on (someone took over): lost at once
    (LEADING, Action.RENEW, Result.REFUSED, None, 101.0, Role.STANDBY, "lost"),
    # the database cannot be asked: still leading within lost_after_s of the last renewal ...
    (LEADING, Action.RENEW, Result.FAILED, None, 103.0, Role.LEADER, None),
    # ... and no longer after it, before the lease (failover_s) can expire
    (LEADING, Action.RENEW, Result.FAILED, None, 103.01, Role.STANDBY, "lost"),
    # a step-down ends leading whether or not the release reached the database
    (Belief(Role.LEADER, 7, 100.0, True), Action.RELEASE, Result.DONE, None, 101.0, Role.STANDBY, "stepped_down"),
    (Belief(Role.LEADER, 7, 100.0, True), Action.RELEASE, Result.FAILED, None, 101.0, Role.STANDBY, "stepped_down"),
])
def test_after(belief, action, result, epoch, now, role, event):
    new, change = after(belief, action, result, epoch, now - 0.01, now, T)
    assert new.role is role
    assert (change.event if change else None) == event
    if change is not None:
        assert change.to is role


def test_a_renewal_counts_from_when_it_was_sent_not_when_it_came_back():
    belief, _ = after(LEADING, Action.RENEW, Result.DONE, 7, 101.0, 102.5, T)
    assert belief.renewed_at == 101.0
    assert expire(belief, 104.0, T)[0].role is Role.LEADER
    assert expire(belief, 104.01, T)[0].role is Role.STANDBY


def test_acquiring_records_the_epoch_and_a_step_down_holds_off_two_renewal_periods():
    leader, change = after(STANDBY, Action.ACQUIRE, Result.DONE, 9, 100.0, 100.2, T)
    assert (leader.epoch, leader.renewed_at, change.epoch) == (9, 100.0, 9)
    stepped, _ = after(Belief(Role.LEADER, 9, 100.0, True), Action.RELEASE, Result.DONE, None, 101.0, 101.0, T)
    assert stepped.hold_off_until == 103.0 and next_action(stepped, 102.9) is Action.WAIT
    assert next_action(stepped, 103.0) is Action.ACQUIRE


def test_the_next_attempt_comes_before_a_leaders_limit_runs_out():
    assert wait_before_next(STANDBY, 100.0, T) == 1.0
    assert wait_before_next(Belief(Role.LEADER, 7, 100.0), 102.5, T) == pytest.approx(0.501)
    assert wait_before_next(Belief(hold_off_until=100.3), 100.0, T) == pytest.approx(0.3)
    # a standby asks again right after the holder's lease expires, not a whole period later
    assert wait_before_next(STANDBY, 100.0, T, expires_in=0.4) == pytest.approx(0.41)
    assert wait_before_next(STANDBY, 100.0, T, expires_in=7.0) == 1.0


# --- the config section --------------------------------------------------------------------------

def _config(tmp_path, leadership, extra=None):
    path = tmp_path / "msd.yaml"
    path.write_text(yaml.safe_dump({**BASE, **(extra or {}), "leadership": leadership}))
    return load_config(path, env={})


def test_leadership_is_off_by_default_with_documented_timings(tmp_path):
    cfg = _config(tmp_path, {})
    lead = cfg.leadership
    assert (lead.enabled, lead.lease_renew_s, lead.failover_s, lead.lost_after_s) == (False, 2.0, 10.0, 6.0)
    assert lead.instance


@pytest.mark.parametrize("values, key", [
    ({"enabled": "yes"}, "leadership.enabled"),
    ({"lease_renew_s": 0}, "leadership.lease_renew_s"),
    ({"failover_s": 1000}, "leadership.failover_s"),
    ({"lease_renew_s": 2, "failover_s": 5}, "leadership.failover_s"),
    ({"instance": "a/b"}, "leadership.instance"),
    ({"lease_s": 3}, "leadership.lease_s"),
    # failover_s - 2 x lease_renew_s = 2 s is not above 2 x the supervisor's heartbeat interval (1 s)
    ({"enabled": True, "lease_renew_s": 0.5, "failover_s": 3}, "leadership.failover_s"),
])
def test_leadership_errors_name_key_value_and_range(tmp_path, values, key):
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, values)
    assert err.value.key == key


# --- the supervisor ------------------------------------------------------------------------------

@pytest.fixture
def lead_env(tmp_path):
    cfg = _config(tmp_path, {"enabled": True, "instance": "box-a", "lease_renew_s": 0.5, "failover_s": 3},
                  {"supervisor": {**BASE["supervisor"], "heartbeat_interval_s": 0.5}})
    host, notifier, clock = FakeHost(), FakeNotifier(), Clock()
    arbiter = Arbiter(cfg, host, notifier, clock=clock, wall=clock)
    arbiter.start_lease()
    host.latest(LEASE).inbox.append(("booted", {}))
    arbiter.turn(0)
    return arbiter, host, notifier, clock


def lease_says(arbiter, host, role, epoch=None, reason="test"):
    host.latest(LEASE).inbox.append(("event", {"kind": "lease", "role": role, "epoch": epoch, "reason": reason}))
    arbiter.turn(0)


def control(arbiter, cmd, **args):
    import queue
    from msd.supervisor.inbox import Event
    slot = queue.SimpleQueue()
    arbiter.dispatch(Event("control", {"request": {"cmd": cmd, "args": args}}, reply=slot))
    return slot.get_nowait()


def test_a_standby_runs_no_role_and_is_ready_and_healthy(lead_env):
    arbiter, host, notifier, _ = lead_env
    assert [h.name for h in host.spawned] == [LEASE]
    lease_says(arbiter, host, "standby", reason="held by box-b/1")
    arbiter.turn(0)
    assert [h.name for h in host.spawned] == [LEASE]
    assert [s[0] for s in notifier.sent].count("ready") == 1
    assert arbiter.health == (True, [])
    reply = control(arbiter, "retrain")
    assert not reply["ok"] and reply["error"].startswith("standby")
    assert not control(arbiter, "step-down")["ok"]


def test_the_leader_starts_its_roles_with_the_epoch_and_stops_them_when_it_loses_the_lease(lead_env):
    arbiter, host, _, clock = lead_env
    lease_says(arbiter, host, "leader", epoch=4)
    roles = [h for h in host.spawned if h.name != LEASE]
    assert sorted(h.name for h in roles) == ["consumer", "exits", "signaller"]
    assert {h.args["writer"]["epoch"] for h in roles} == {4}
    for h in roles:
        h.inbox.append(("booted", {}))
    arbiter.turn(0)
    view = status_snapshot(arbiter)["leadership"]
    assert (view["role"], view["epoch"], view["holder_name"].split("/")[0]) == ("leader", 4, "box-a")
    lease_says(arbiter, host, "standby", reason="could not renew")
    assert all(h.signals == [signal.SIGTERM] for h in roles)
    clock.now += 0.6          # one renewal period later, what has not stopped is killed
    arbiter.turn(0)
    assert all(h.signals == [signal.SIGTERM, signal.SIGKILL] for h in roles)
    arbiter.turn(0)
    clock.now += 5
    arbiter.turn(0)
    assert {r.state for r in arbiter.records.values()} == {State.STOPPED}
    assert len(host.spawned) == 4          # nothing restarted while standby


def test_step_down_stops_the_roles_first_and_then_has_the_lease_released(lead_env):
    arbiter, host, _, _ = lead_env
    lease_says(arbiter, host, "leader", epoch=2)
    roles = [h for h in host.spawned if h.name != LEASE]
    assert control(arbiter, "step-down")["ok"]
    arbiter.turn(0)
    assert all(h.signals == [signal.SIGTERM] for h in roles)
    assert not getattr(host.latest(LEASE), "sent", [])      # still ours while a role runs
    assert not control(arbiter, "retrain")["ok"]
    for h in roles:
        h.code = 0
    arbiter.turn(0)
    assert host.latest(LEASE).sent[-1] == ("step_down", {})
    assert len(host.spawned) == 4                            # nothing restarted meanwhile


def test_a_dead_lease_child_ends_leading_and_is_started_again_once_the_roles_are_gone(lead_env):
    arbiter, host, _, clock = lead_env
    lease_says(arbiter, host, "leader", epoch=2)
    first = host.latest(LEASE)
    first.code = -signal.SIGKILL
    arbiter.turn(0)
    assert arbiter.lease.role == "standby"
    roles = [h for h in host.spawned if h.name != LEASE]
    assert all(signal.SIGTERM in h.signals for h in roles)
    clock.now += 0.3
    arbiter.turn(0)
    assert host.latest(LEASE) is first          # a role still runs: no new competitor yet
    for h in roles:
        h.code = 0
    clock.now += 1
    arbiter.turn(0)
    assert host.latest(LEASE) is not first


def test_a_graceful_stop_stops_the_lease_child_last(lead_env):
    arbiter, host, _, clock = lead_env
    lease_says(arbiter, host, "leader", epoch=2)
    arbiter.begin_stop("test")
    order = []
    for _ in range(10):
        arbiter.turn(0)
        for h in host.spawned:
            if h.signals and h.code is None:
                order.append(h.name)
                h.code = 0
    assert order[-1] == LEASE and len(order) == 4
    assert arbiter.exit_code == 0


def test_a_silent_lease_child_ends_leading_before_the_lease_can_expire(lead_env):
    arbiter, host, _, clock = lead_env
    lease_says(arbiter, host, "leader", epoch=3)
    clock.now += 1.9          # lost_after_s = 3 - 2 x 0.5 = 2: still leading
    arbiter.turn(0)
    assert arbiter.lease.role == "leader"
    clock.now += 0.2
    arbiter.turn(0)
    assert arbiter.lease.role == "standby"
    assert signal.SIGKILL in host.latest(LEASE).signals
    assert all(signal.SIGTERM in h.signals for h in host.spawned if h.name != LEASE)


def test_a_reload_applies_lease_timings_live_but_not_turning_leases_off(lead_env, tmp_path):
    arbiter, host, _, _ = lead_env
    new = _config(tmp_path, {"enabled": False, "instance": "box-z", "lease_renew_s": 1, "failover_s": 4},
                  {"supervisor": {**BASE["supervisor"], "heartbeat_interval_s": 0.5}})
    kept = arbiter.keep_leadership_identity(new)
    assert (kept.leadership.enabled, kept.leadership.instance) == (True, "box-a")
    assert (kept.leadership.lease_renew_s, kept.leadership.failover_s) == (1, 4)
