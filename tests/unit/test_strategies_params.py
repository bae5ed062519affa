"""Strategy parameter validation: good configs load, bad ones name the key, value and range."""
from decimal import Decimal as D

import pytest

from msd.strategies.conflicts import ConflictPolicy, ConflictRules
from msd.strategies.heuristics import Heuristic
from msd.strategies.params import StrategyParams, WarmupParams, default_seed


def config(**overrides):
    warmup = {"min_amount_usdt": 10, "max_amount_usdt": "25.5", "max_exposure_usdt": 100}
    warmup.update(overrides.pop("warmup", {}))
    data = {"id": "momentum_v1", "assets": ["BTCUSDT", "ETHUSDT"],
            "rate": {"rate_per_s": 0.5, "burst": 3}, "warmup": warmup}
    data.update(overrides)
    return data


def test_minimal_config_gets_documented_defaults():
    params = StrategyParams.from_mapping(config(), "strategies[0]")
    assert params.assets == ("BTCUSDT", "ETHUSDT")
    assert params.trigger == "schedule"
    assert params.seed == default_seed("momentum_v1")
    warmup = params.warmup
    assert (warmup.min_amount_usdt, warmup.max_amount_usdt) == (D("10"), D("25.5"))
    assert warmup.frequency_s == 60.0 and warmup.heuristic is Heuristic.RANDOM
    assert warmup.randomness == 0.0
    assert (warmup.budget_usdt, warmup.max_duration_s) == (D("50"), 7 * 86400.0)
    assert (warmup.confidence_min, warmup.confidence_max) == (0.5, 0.8)


def test_full_config_loads():
    params = StrategyParams.from_mapping(config(
        trigger="market", seed=42,
        warmup={"frequency_s": 5, "heuristic": "mean_reversion", "randomness": 0.25,
                "confidence_min": 0.6, "confidence_max": 0.6, "warmup_duration_s": 3600,
                "stretch_z": 2}), "strategies[0]")
    assert params.trigger == "market" and params.seed == 42
    assert params.warmup.heuristic is Heuristic.MEAN_REVERSION
    assert params.warmup.max_duration_s == 3600.0      # the older key is an alias


def test_warmup_budget_keys():
    warmup = WarmupParams.from_mapping({"min_amount_usdt": 1, "max_amount_usdt": 2, "max_exposure_usdt": 5,
                                        "budget_usdt": "12.5", "max_duration_s": 600})
    assert (warmup.budget_usdt, warmup.max_duration_s) == (D("12.5"), 600.0)


def test_amount_from_float_keeps_its_decimal_spelling():
    params = WarmupParams.from_mapping(
        {"min_amount_usdt": 0.1, "max_amount_usdt": 0.3, "max_exposure_usdt": 1})
    assert params.max_amount_usdt == D("0.3")


P = "strategies[2]"


@pytest.mark.parametrize("overrides, message", [
    ({"warmup": {"randomness": 1.5}},
     f"{P}.warmup.randomness: 1.5 is invalid; expected a number in [0, 1]"),
    ({"warmup": {"randomness": "high"}}, f"{P}.warmup.randomness: 'high' is invalid"),
    ({"warmup": {"frequency_s": 0}}, f"{P}.warmup.frequency_s: 0 is invalid; expected a finite number > 0"),
    ({"warmup": {"heuristic": "martingale"}},
     f"{P}.warmup.heuristic: 'martingale' is invalid; expected one of momentum, mean_reversion, random"),
    ({"warmup": {"min_amount_usdt": "0.001"}},
     f"{P}.warmup.min_amount_usdt: 0.001 is invalid; expected a Decimal amount >= 0.01"),
    ({"warmup": {"min_amount_usdt": "10.005"}}, f"{P}.warmup.min_amount_usdt: 10.005 is invalid"),
    ({"warmup": {"max_amount_usdt": 5}},
     f"{P}.warmup.max_amount_usdt: 5 is invalid; expected a Decimal amount >= min_amount_usdt (10)"),
    ({"warmup": {"max_exposure_usdt": 9}}, f"{P}.warmup.max_exposure_usdt: 9 is invalid"),
    ({"warmup": {"max_exposure_usdt": "lots"}}, f"{P}.warmup.max_exposure_usdt: 'lots' is invalid"),
    ({"warmup": {"confidence_min": 0.9, "confidence_max": 0.8}},
     f"{P}.warmup.confidence_max: 0.8 is invalid; expected a number in [confidence_min=0.9, 1]"),
    ({"warmup": {"confidence_min": -0.1}}, f"{P}.warmup.confidence_min: -0.1 is invalid"),
    ({"warmup": {"warmup_duration_s": -5}}, f"{P}.warmup.warmup_duration_s: -5 is invalid"),
    ({"warmup": {"budget_usdt": 0}}, f"{P}.warmup.budget_usdt: 0 is invalid; expected a finite amount > 0"),
    ({"warmup": {"max_duration_s": 0}}, f"{P}.warmup.max_duration_s: 0 is invalid"),
    ({"warmup": {"max_duration_s": 5, "warmup_duration_s": 5}},
     f"{P}.warmup.warmup_duration_s: 5 is invalid; expected absent when max_duration_s"),
    ({"warmup": {"frequncy_s": 5}}, f"{P}.warmup.frequncy_s: 5 is invalid; expected no such key"),
    ({"id": ""}, f"{P}.id: '' is invalid; expected 1 to 100 characters"),
    ({"id": "x" * 101}, f"{P}.id: '{'x' * 101}' is invalid"),
    ({"id": "has space"}, f"{P}.id: 'has space' is invalid"),
    ({"assets": []}, f"{P}.assets: () is invalid; expected a non-empty list"),
    ({"assets": "BTCUSDT"}, f"{P}.assets: 'BTCUSDT' is invalid; expected a non-empty list"),
    ({"assets": ["BTCUSDT", "btcusdt"]}, f"{P}.assets[1]: 'btcusdt' is invalid; expected 4 to 20 uppercase"),
    ({"assets": ["BTC-USDT"]}, f"{P}.assets[0]: 'BTC-USDT' is invalid"),
    ({"assets": ["BTC"]}, f"{P}.assets[0]: 'BTC' is invalid"),
    ({"assets": ["BTCUSDT", "BTCUSDT"]}, f"{P}.assets[1]: 'BTCUSDT' is invalid; expected each asset listed once"),
    ({"trigger": "cron"}, f"{P}.trigger: 'cron' is invalid; expected one of schedule, market"),
    ({"seed": "7"}, f"{P}.seed: '7' is invalid; expected an integer"),
    ({"rate": {"rate_per_s": -1, "burst": 1}}, f"{P}.rate.rate_per_s: -1 is invalid"),
    ({"warmup": None}, f"{P}.warmup: None is invalid; expected a mapping"),
])
def test_invalid_values_name_the_path(overrides, message):
    data = config(**{k: v for k, v in overrides.items() if k != "warmup"})
    if "warmup" in overrides:
        data["warmup"] = None if overrides["warmup"] is None else {**data["warmup"], **overrides["warmup"]}
    with pytest.raises(ValueError) as error:
        StrategyParams.from_mapping(data, P)
    assert str(error.value).startswith(message)


def test_missing_required_key_is_named():
    data = config()
    del data["warmup"]["max_exposure_usdt"]
    with pytest.raises(ValueError, match=r"^strategies\[0\]\.warmup\.max_exposure_usdt: missing"):
        StrategyParams.from_mapping(data, "strategies[0]")


def test_direct_construction_validates_too():
    with pytest.raises(ValueError, match=r"^warmup\.randomness: 2 is invalid"):
        WarmupParams(min_amount_usdt=D("1"), max_amount_usdt=D("2"), max_exposure_usdt=D("5"),
                     randomness=2)


@pytest.mark.parametrize("mapping, expected", [
    ({}, ConflictRules(ConflictPolicy.SUPPRESS_LATER, 60.0)),
    ({"policy": "allow", "window_s": 5}, ConflictRules(ConflictPolicy.ALLOW, 5)),
])
def test_conflict_rules_load(mapping, expected):
    assert ConflictRules.from_mapping(mapping) == expected


@pytest.mark.parametrize("mapping, message", [
    ({"policy": "first_wins"}, "conflicts.policy: 'first_wins' is invalid; expected one of suppress_later, allow"),
    ({"window_s": -1}, "conflicts.window_s: -1 is invalid"),
])
def test_conflict_rules_validation(mapping, message):
    with pytest.raises(ValueError) as error:
        ConflictRules.from_mapping(mapping)
    assert str(error.value).startswith(message)
