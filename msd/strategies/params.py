"""Strategy parameters (FR-007, FR-008, FR-011, FR-018, FR-024), validated on construction.

Each class checks its own values in `__post_init__`, naming the offending key under the `path`
prefix it was given (e.g. `strategies[2].warmup.randomness`). `from_mapping` turns a parsed
YAML mapping into the class, converting numbers (money becomes Decimal) and refusing unknown
keys, so a typo in the config file is an error instead of a silently ignored setting.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import InitVar, dataclass
from decimal import Decimal
from typing import Any, Mapping

from msd.strategies.heuristics import Heuristic
from msd.values.bucket import TokenBucket
from msd.values.parsing import InvalidValue, check_keys, is_real_number, to_decimal, to_float

# order-manager refuses amounts below 0.01 USDT, and amounts are drawn on a 0.01 grid.
MIN_AMOUNT_USDT = Decimal("0.01")
_CENT = Decimal("0.01")
STRATEGY_ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
# order-manager: asset uppercase alphanumeric, length 4..20 (VARCHAR(20) in its tables).
ASSET_PATTERN = re.compile(r"[A-Z0-9]{4,20}")
TRIGGERS = ("schedule", "market")

_WARMUP_REQUIRED = ("min_amount_usdt", "max_amount_usdt", "max_exposure_usdt")
_WARMUP_OPTIONAL = ("frequency_s", "heuristic", "randomness", "confidence_min", "confidence_max",
                    "budget_usdt", "max_duration_s", "stretch_z", "unlabelled_loss_pct")
# Older configs named the duration cap `warmup_duration_s`; it is read as max_duration_s.
_WARMUP_ALIASES = {"warmup_duration_s": "max_duration_s"}
DEFAULT_BUDGET_USDT = Decimal("50")
DEFAULT_MAX_DURATION_S = 7 * 86400.0


def _is_cent_multiple(amount: Decimal) -> bool:
    return amount == amount.quantize(_CENT)


def _positive_float(value: object, path: str) -> float:
    number = to_float(path, value, allowed="a finite number > 0")
    if number <= 0:
        raise InvalidValue(path, value, "a finite number > 0")
    return number


def _unit_interval(value: object, path: str) -> float:
    allowed = "a number in [0, 1]"
    number = to_float(path, value, allowed=allowed)
    if not 0.0 <= number <= 1.0:
        raise InvalidValue(path, value, allowed)
    return number


@dataclass(frozen=True)
class WarmupParams:
    """How a strategy behaves in warm-up mode.

    Amounts are USDT for both sides. `max_exposure_usdt` bounds the asset's net exposure
    (positions + open orders, long positive) after the signal. `stretch_z` is how many standard
    deviations a recent return must reach before mean reversion takes the other side.
    `budget_usdt` is the warm-up spend allowed (minus the sum of the warm-up calls' results
    after costs, msd.learning.budget) and `max_duration_s` how long warm-up may last; when
    either is spent without a promoted model the strategy pauses. `unlabelled_loss_pct` is the
    stated worst case charged to the budget, in percent of the traded notional, for a call whose
    horizon ended without a label (no bar recorded): without it a stopped market-data feed
    would stop the spend.
    """
    min_amount_usdt: Decimal
    max_amount_usdt: Decimal
    max_exposure_usdt: Decimal
    frequency_s: float = 60.0
    heuristic: Heuristic = Heuristic.RANDOM
    randomness: float = 0.0
    confidence_min: float = 0.5
    confidence_max: float = 0.8
    budget_usdt: Decimal = DEFAULT_BUDGET_USDT
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    stretch_z: float = 1.0
    unlabelled_loss_pct: float = 2.0
    path: InitVar[str] = "warmup"

    def __post_init__(self, path: str) -> None:
        self._check_amounts(path)
        if not isinstance(self.heuristic, Heuristic):
            raise InvalidValue(f"{path}.heuristic", self.heuristic,
                          f"one of {', '.join(h.value for h in Heuristic)}")
        checks = {"frequency_s": _positive_float, "randomness": _unit_interval,
                  "confidence_min": _unit_interval, "confidence_max": _unit_interval,
                  "stretch_z": _positive_float, "max_duration_s": _positive_float,
                  "unlabelled_loss_pct": _positive_float}
        for name, check in checks.items():
            # Stored as float whatever number type came in, so equal configs compare equal.
            object.__setattr__(self, name, check(getattr(self, name), f"{path}.{name}"))
        if self.confidence_max < self.confidence_min:
            raise InvalidValue(f"{path}.confidence_max", self.confidence_max,
                          f"a number in [confidence_min={self.confidence_min}, 1]")

    def _check_amounts(self, path: str) -> None:
        low, high, cap = self.min_amount_usdt, self.max_amount_usdt, self.max_exposure_usdt
        grid = "a Decimal amount >= 0.01 with at most 2 decimal places"
        if not isinstance(low, Decimal) or not is_real_number(low) \
                or low < MIN_AMOUNT_USDT or not _is_cent_multiple(low):
            raise InvalidValue(f"{path}.min_amount_usdt", low, grid)
        if not isinstance(high, Decimal) or not is_real_number(high) \
                or high < low or not _is_cent_multiple(high):
            raise InvalidValue(f"{path}.max_amount_usdt", high,
                          f"a Decimal amount >= min_amount_usdt ({low}) with at most 2 decimal places")
        # A cap below the smallest signal would silently forbid every buy of this strategy.
        if not isinstance(cap, Decimal) or not is_real_number(cap) or cap < low:
            raise InvalidValue(f"{path}.max_exposure_usdt", cap,
                          f"a Decimal amount >= min_amount_usdt ({low})")
        budget = self.budget_usdt
        if not isinstance(budget, Decimal) or not is_real_number(budget) or budget <= 0:
            raise InvalidValue(f"{path}.budget_usdt", budget, "a finite amount > 0 (USDT)")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: str = "warmup") -> "WarmupParams":
        """Build from a config mapping; errors name keys under `path`."""
        if isinstance(data, Mapping):
            data = dict(data)
            for old, new in _WARMUP_ALIASES.items():
                if old in data and new in data:
                    raise InvalidValue(f"{path}.{old}", data[old], f"absent when {new} is given (alias)")
                if old in data:
                    _positive_float(data[old], f"{path}.{old}")
                    data[new] = data.pop(old)
        check_keys(data, path, _WARMUP_REQUIRED, _WARMUP_OPTIONAL)
        money = {key: to_decimal(f"{path}.{key}", data[key], allowed="a number (USDT)")
                 for key in _WARMUP_REQUIRED + ("budget_usdt",) if key in data}
        # Plain numbers pass through unconverted so that errors quote them as written.
        numbers = {key: data[key] for key in _WARMUP_OPTIONAL
                   if key in data and key not in ("heuristic", "budget_usdt")}
        if "heuristic" in data:
            numbers["heuristic"] = _parse_heuristic(data["heuristic"], f"{path}.heuristic")
        return cls(**money, **numbers, path=path)


def _parse_heuristic(value: object, path: str) -> Heuristic:
    try:
        return Heuristic(value)
    except ValueError:
        raise InvalidValue(path, value, f"one of {', '.join(h.value for h in Heuristic)}") from None


def default_seed(strategy_id: str) -> int:
    """A seed derived from the id: stable across restarts and different per strategy."""
    return zlib.crc32(strategy_id.encode("utf-8"))


@dataclass(frozen=True)
class StrategyParams:
    """One configured strategy: identity, assets, when it is evaluated, its limits and seed."""
    id: str
    assets: tuple[str, ...]
    trigger: str
    rate: TokenBucket
    warmup: WarmupParams
    seed: int
    path: InitVar[str] = "strategy"

    def __post_init__(self, path: str) -> None:
        if not isinstance(self.id, str) or not STRATEGY_ID_PATTERN.fullmatch(self.id):
            raise InvalidValue(f"{path}.id", self.id, "1 to 100 characters from A-Z a-z 0-9 _ . -")
        self._check_assets(path)
        if self.trigger not in TRIGGERS:
            raise InvalidValue(f"{path}.trigger", self.trigger, f"one of {', '.join(TRIGGERS)}")
        if not isinstance(self.rate, TokenBucket):
            raise InvalidValue(f"{path}.rate", self.rate, "a TokenBucket")
        if not isinstance(self.warmup, WarmupParams):
            raise InvalidValue(f"{path}.warmup", self.warmup, "WarmupParams")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InvalidValue(f"{path}.seed", self.seed, "an integer")

    def _check_assets(self, path: str) -> None:
        if not isinstance(self.assets, tuple) or not self.assets:
            raise InvalidValue(f"{path}.assets", self.assets, "a non-empty list of assets")
        for index, asset in enumerate(self.assets):
            if not isinstance(asset, str) or not ASSET_PATTERN.fullmatch(asset):
                raise InvalidValue(f"{path}.assets[{index}]", asset,
                              "4 to 20 uppercase letters or digits, e.g. BTCUSDT")
            if asset in self.assets[:index]:
                raise InvalidValue(f"{path}.assets[{index}]", asset, "each asset listed once")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: str = "strategy") -> "StrategyParams":
        """Build from a config mapping; `seed` defaults to a hash of the id."""
        check_keys(data, path, required=("id", "assets", "rate", "warmup"),
                   optional=("trigger", "seed"))
        assets = data["assets"]
        if not isinstance(assets, (list, tuple)):
            raise InvalidValue(f"{path}.assets", assets, "a non-empty list of assets")
        strategy_id = data["id"]
        seed = data.get("seed")
        if seed is None and isinstance(strategy_id, str):
            seed = default_seed(strategy_id)
        return cls(id=strategy_id, assets=tuple(assets), trigger=data.get("trigger", "schedule"),
                   rate=TokenBucket.from_mapping(data["rate"], f"{path}.rate"),
                   warmup=WarmupParams.from_mapping(data["warmup"], f"{path}.warmup"),
                   seed=seed, path=path)
