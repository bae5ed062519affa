"""Exit rule parameters: validated on construction; built from YAML mappings with keyed errors."""
from datetime import timedelta
from decimal import Decimal as D

import pytest

from msd.rules import (
    DEFAULT_PRIORITY,
    ExitReason,
    ExitRules,
    LadderStep,
    RuleConfigError,
    TakeProfit,
    TimeExit,
    Trailing,
)

YAML = {
    "take_profit": {
        "steps": [{"at_pct": 3, "close": 0.5}, {"at_pct": 5, "close": 1.0}],
        "breakeven_after_first_step": True,
        "breakeven_fee_pct": 0.12,
    },
    "stop_loss_pct": "2.5",
    "trailing": {"activation_pct": 1, "distance_pct": 0.5},
    "time_exit": {"max_hold_seconds": 86400, "min_profit_pct": 0.3},
    "cooldown_seconds": 90,
}


def test_from_mapping_builds_every_rule_with_exact_decimals():
    rules = ExitRules.from_mapping(YAML)
    assert rules.take_profit.steps == (LadderStep(D(3), D("0.5")), LadderStep(D(5), D(1)))
    assert rules.breakeven_after_first_step and rules.breakeven_fee_pct == D("0.12")
    assert rules.stop_loss_pct == D("2.5")
    assert rules.trailing == Trailing(D(1), D("0.5"))
    assert rules.time_exit == TimeExit(timedelta(days=1), D("0.3"))
    assert rules.cooldown == timedelta(seconds=90)
    assert rules.priority == DEFAULT_PRIORITY


def test_defaults_all_rules_off_and_sixty_second_cooldown():
    rules = ExitRules.from_mapping({})
    assert (rules.take_profit, rules.stop_loss_pct, rules.trailing, rules.time_exit) == (None,) * 4
    assert rules.cooldown == timedelta(seconds=60)


def test_default_priority_is_protective_first():
    assert DEFAULT_PRIORITY[:3] == (ExitReason.STOP_LOSS, ExitReason.BREAKEVEN_STOP, ExitReason.TRAILING_STOP)
    assert DEFAULT_PRIORITY[-1] is ExitReason.TIME_EXIT
    assert sorted(DEFAULT_PRIORITY) == sorted(ExitReason)


def test_single_threshold_take_profit():
    assert ExitRules.from_mapping({"take_profit": {"pct": 3}}).take_profit == TakeProfit(pct=D(3))


def test_priority_from_strings():
    order = [r.value for r in reversed(DEFAULT_PRIORITY)]
    assert ExitRules.from_mapping({"priority": order}).priority == tuple(reversed(DEFAULT_PRIORITY))


@pytest.mark.parametrize("change, key", [
    ({"stop_loss_pct": 0}, "exit_rules.stop_loss_pct"),
    ({"stop_loss_pct": 100}, "exit_rules.stop_loss_pct"),
    ({"stop_loss_pct": "two"}, "exit_rules.stop_loss_pct"),
    ({"stop_loss_pct": float("nan")}, "exit_rules.stop_loss_pct"),
    ({"stop_los_pct": 2}, "exit_rules.stop_los_pct"),
    ({"take_profit": {"pct": 3, "steps": [{"at_pct": 3, "close": 1}]}}, "exit_rules.take_profit"),
    ({"take_profit": {}}, "exit_rules.take_profit"),
    ({"take_profit": {"pct": -1}}, "exit_rules.take_profit.pct"),
    ({"take_profit": {"steps": [{"at_pct": 3, "close": 0.5}, {"at_pct": 3, "close": 1}]}},
     "exit_rules.take_profit.steps[1].at_pct"),
    ({"take_profit": {"steps": [{"at_pct": 3, "close": 0.5}, {"at_pct": 5, "close": 0.4}]}},
     "exit_rules.take_profit.steps[1].close"),
    ({"take_profit": {"steps": [{"at_pct": 3, "close": 1.5}]}}, "exit_rules.take_profit.steps[0].close"),
    ({"take_profit": {"steps": [{"at_pct": 3}]}}, "exit_rules.take_profit.steps[0].close"),
    ({"take_profit": {"steps": [{"at_pct": 3, "close": 1, "extra": 1}]}}, "exit_rules.take_profit.steps[0].extra"),
    ({"take_profit": {"pct": 3, "breakeven_after_first_step": True}},
     "exit_rules.take_profit.breakeven_after_first_step"),
    ({"take_profit": {"steps": [{"at_pct": 3, "close": 1}], "breakeven_after_first_step": "yes"}},
     "exit_rules.take_profit.breakeven_after_first_step"),
    ({"take_profit": {"steps": [{"at_pct": 3, "close": 1}], "breakeven_fee_pct": -0.1}},
     "exit_rules.take_profit.breakeven_fee_pct"),
    ({"trailing": {"activation_pct": 1}}, "exit_rules.trailing.distance_pct"),
    ({"trailing": {"activation_pct": -1, "distance_pct": 1}}, "exit_rules.trailing.activation_pct"),
    ({"trailing": {"activation_pct": 1, "distance_pct": 0}}, "exit_rules.trailing.distance_pct"),
    ({"trailing": "on"}, "exit_rules.trailing"),
    ({"time_exit": {"max_hold_seconds": 0}}, "exit_rules.time_exit.max_hold_seconds"),
    ({"time_exit": {"min_profit_pct": 1}}, "exit_rules.time_exit.max_hold_seconds"),
    ({"time_exit": {"max_hold_seconds": 60, "min_profit_pct": "x"}}, "exit_rules.time_exit.min_profit_pct"),
    ({"priority": ["stop_loss", "time_exit"]}, "exit_rules.priority"),
    ({"priority": list(DEFAULT_PRIORITY[:-1]) + ["stop_loss"]}, "exit_rules.priority"),
    ({"priority": "stop_loss"}, "exit_rules.priority"),
    ({"cooldown_seconds": -1}, "exit_rules.cooldown_seconds"),
    ({"cooldown_seconds": 0}, "exit_rules.cooldown_seconds"),
    ({"cooldown_seconds": 0.5}, "exit_rules.cooldown_seconds"),
    ({"trailing": {"activation_pct": 0.5, "distance_pct": 0.8}}, "exit_rules.trailing.activation_pct"),
])
def test_from_mapping_errors_name_the_key(change, key):
    with pytest.raises(RuleConfigError) as err:
        ExitRules.from_mapping({**YAML, **change})
    assert err.value.key == key
    assert isinstance(err.value, ValueError)
    assert str(err.value).startswith(f"{key}: ") and "expected" in str(err.value)


def test_from_mapping_refuses_non_mapping():
    with pytest.raises(RuleConfigError) as err:
        ExitRules.from_mapping(["stop_loss_pct", 2], path="strategies.momentum.exits")
    assert err.value.key == "strategies.momentum.exits"


@pytest.mark.parametrize("build, field", [
    (lambda: LadderStep(D(0), D(1)), "at_pct"),
    (lambda: LadderStep(D(1), D(0)), "close"),
    (lambda: Trailing(D(1), D(100)), "trailing.distance_pct"),
    (lambda: TimeExit(timedelta(0)), "time_exit.max_hold"),
    (lambda: ExitRules(cooldown=timedelta(seconds=-1)), "cooldown"),
    (lambda: ExitRules(cooldown=timedelta(0)), "cooldown"),
    (lambda: Trailing(D("0.5"), D("0.8")), "trailing.activation_pct"),
    (lambda: ExitRules(stop_loss_pct=True), "stop_loss_pct"),
    (lambda: ExitRules(trailing={"activation_pct": 1}), "trailing"),
    (lambda: ExitRules(priority=(ExitReason.STOP_LOSS,) * 6), "priority"),
])
def test_dataclasses_validate_on_construction(build, field):
    with pytest.raises(RuleConfigError) as err:
        build()
    assert err.value.key == field


def test_rules_are_frozen():
    rules = ExitRules(stop_loss_pct=D(2))
    with pytest.raises(AttributeError):
        rules.stop_loss_pct = D(3)


def test_zero_cooldown_is_refused_because_it_would_let_a_rule_fire_on_every_tick():
    """Regression (issue 8): `cooldown_seconds: 0` was accepted; the floor is 1 s."""
    with pytest.raises(RuleConfigError, match=">= 1"):
        ExitRules.from_mapping({"cooldown_seconds": 0})
    assert ExitRules.from_mapping({"cooldown_seconds": 1}).cooldown == timedelta(seconds=1)


def test_trailing_activation_below_its_distance_is_refused_as_it_would_trail_at_a_loss():
    """Regression (issue 8): activation 0.5 % with distance 0.8 % armed a stop below the entry."""
    with pytest.raises(RuleConfigError) as err:
        Trailing(D("0.5"), D("0.8"))
    assert "trailing.distance_pct 0.8" in str(err.value)


@pytest.mark.parametrize("activation, distance, accepted", [
    ("0.8", "0.8", False),                  # >= distance, yet the stop sits 0.0064 % below the entry
    ("0.806451612903", "0.8", False),       # just below 0.8 / 0.992
    ("0.806451612904", "0.8", True),
    ("1.5", "0.8", True),                   # the shipped default
    ("1", "50", False), ("100", "50", True),
    ("0.01", "0.01", False), ("0.010001000101", "0.01", True),
])
def test_trailing_activation_equal_to_its_distance_is_refused_as_the_stop_would_sit_below_entry(
        activation, distance, accepted):
    """Regression (exit review 11): activation >= distance still armed a long's stop below the
    entry (peak x (1 - d) < entry when a < d / (1 - d)). The error names key, value and range."""
    if accepted:
        trailing = Trailing(D(activation), D(distance))
        peak = D(100) * (1 + trailing.activation_pct / 100)
        assert peak * (1 - trailing.distance_pct / 100) >= 100, "armed at the bound, the stop is at or above entry"
        return
    with pytest.raises(RuleConfigError) as err:
        ExitRules.from_mapping({"trailing": {"activation_pct": activation, "distance_pct": distance}})
    assert err.value.key == "exit_rules.trailing.activation_pct" and err.value.value == D(activation)
    assert "distance / (1 - distance)" in err.value.allowed and ">= " in err.value.allowed


def test_time_exit_min_profit_defaults_to_zero_and_may_be_negative():
    """Regression (issue 8): the default time exit closed at any loss; acceptance scenario 4 asks
    for the profit target. A negative value means "exit even at this loss"."""
    assert ExitRules.from_mapping({"time_exit": {"max_hold_seconds": 60}}).time_exit.min_profit_pct == 0
    assert TimeExit(timedelta(minutes=1)).min_profit_pct == 0
    negative = ExitRules.from_mapping({"time_exit": {"max_hold_seconds": 60, "min_profit_pct": -1.5}})
    assert negative.time_exit.min_profit_pct == D("-1.5")
