"""Exit rule parameters: frozen dataclasses validated on construction, and a builder from YAML.

Units are in the field names: `*_pct` is percent of the entry price (or, for the trailing distance,
of the peak/trough), `close` is a fraction in (0, 1], durations are `timedelta`s (`*_seconds` in
YAML). Any rule set to None is off. Numbers are Decimals; ints, numeric strings and floats are
accepted and converted (floats via repr, so 0.1 stays 0.1).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any, Mapping

from msd.rules.types import ExitReason
from msd.values.parsing import InvalidValue, to_decimal

# Protective exits come first: when a loss-limiting rule and a profit-taking rule are true on the
# same price, closing everything to protect capital beats a partial take-profit. Stop loss leads
# because it is the hardest limit; the breakeven stop and the trailing stop protect gains already
# made; take profit then locks in gains; the time exit is housekeeping and yields to everything.
DEFAULT_PRIORITY: tuple[ExitReason, ...] = (
    ExitReason.STOP_LOSS,
    ExitReason.BREAKEVEN_STOP,
    ExitReason.TRAILING_STOP,
    ExitReason.TAKE_PROFIT,
    ExitReason.TAKE_PROFIT_STEP,
    ExitReason.TIME_EXIT,
)

DEFAULT_COOLDOWN = timedelta(seconds=60)
# An exit is in flight until the positions row shows it (msd.rules.state), so the cooldown is not
# what stops a second exit; it paces them. Zero would let a rule fire on every tick.
MIN_COOLDOWN = timedelta(seconds=1)
# Roughly a Bybit taker round trip (2 x 0.055 %), so a breakeven exit does not turn into a loss.
DEFAULT_BREAKEVEN_FEE_PCT = Decimal("0.1")
_HUNDRED = Decimal(100)


class RuleConfigError(InvalidValue):
    """A rule parameter is invalid. `key` is the dotted path, so the YAML loader can point at it."""

    def __init__(self, key: str, value: object, allowed: str):
        super().__init__(key, value, allowed, message=f"{key}: {value!r} is invalid; expected {allowed}")


def _number(key: str, value: object) -> Decimal:
    """A finite Decimal from int/str/float/Decimal, or RuleConfigError naming `key`."""
    return to_decimal(key, value, allowed="a finite number", error=RuleConfigError)


def _in_range(key: str, value: object, low: Decimal, high: Decimal | None, *, low_open: bool,
              allowed: str, high_open: bool = False) -> Decimal:
    number = _number(key, value)
    too_low = number <= low if low_open else number < low
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        raise RuleConfigError(key, value, allowed)
    return number


def _set(obj: object, name: str, value: object) -> None:
    # Frozen dataclasses normalise their own inputs (e.g. int -> Decimal) during __post_init__.
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class LadderStep:
    """At `at_pct` profit, have closed `close` of the position cumulatively (1 = all of it)."""

    at_pct: Decimal
    close: Decimal

    def __post_init__(self) -> None:
        _set(self, "at_pct", _in_range("at_pct", self.at_pct, Decimal(0), None, low_open=True, allowed="a percent > 0"))
        _set(self, "close", _in_range("close", self.close, Decimal(0), Decimal(1), low_open=True,
                                      allowed="a cumulative fraction in (0, 1]"))


@dataclass(frozen=True)
class TakeProfit:
    """Either one threshold `pct` that closes everything, or a ladder of `steps`, never both.

    Ladder `close` values are cumulative fractions of the position as it was when the ladder
    started; both `at_pct` and `close` must strictly increase. The last step may stop short of 1.0,
    leaving a remainder for the stop, trailing or time rules.
    """

    pct: Decimal | None = None
    steps: tuple[LadderStep, ...] = ()

    def __post_init__(self) -> None:
        if (self.pct is None) == (not self.steps):
            raise RuleConfigError("take_profit", {"pct": self.pct, "steps": self.steps},
                                  "exactly one of pct (single threshold) or steps (ladder)")
        if self.pct is not None:
            _set(self, "pct", _in_range("take_profit.pct", self.pct, Decimal(0), None, low_open=True,
                                        allowed="a percent > 0"))
            return
        steps = tuple(self.steps)
        if not all(isinstance(s, LadderStep) for s in steps):
            raise RuleConfigError("take_profit.steps", self.steps, "a sequence of LadderStep")
        for i in range(1, len(steps)):
            if steps[i].at_pct <= steps[i - 1].at_pct:
                raise RuleConfigError(f"take_profit.steps[{i}].at_pct", steps[i].at_pct,
                                      f"a percent above the previous step's {steps[i - 1].at_pct}")
            if steps[i].close <= steps[i - 1].close:
                raise RuleConfigError(f"take_profit.steps[{i}].close", steps[i].close,
                                      f"a cumulative fraction above the previous step's {steps[i - 1].close}")
        _set(self, "steps", steps)

    @property
    def is_ladder(self) -> bool:
        return bool(self.steps)


@dataclass(frozen=True)
class Trailing:
    """Armed once the highest PnL reaches `activation_pct` of entry; then exits when the price
    retraces `distance_pct` of the peak (long) or trough (short).

    The stop must never sit beyond the entry when it arms. For a long it arms at a peak of
    entry x (1 + a) and sits at peak x (1 - d), which is at or above the entry only when
    a >= d / (1 - d) (fractions); `activation_pct` >= `distance_pct` alone let activation 0.8 %
    with distance 0.8 % arm a stop 0.0064 % below the entry. (A short needs a >= d / (1 + d),
    which the long's bound covers.)
    """

    activation_pct: Decimal
    distance_pct: Decimal

    def __post_init__(self) -> None:
        _set(self, "activation_pct", _in_range("trailing.activation_pct", self.activation_pct, Decimal(0), None,
                                               low_open=False, allowed="a percent >= 0"))
        # 100 % or more would put a long's stop at or below zero: it could never fire.
        _set(self, "distance_pct", _in_range("trailing.distance_pct", self.distance_pct, Decimal(0), Decimal(100),
                                             low_open=True, high_open=True, allowed="a percent in (0, 100)"))
        floor = min_trailing_activation(self.distance_pct)
        if self.activation_pct < floor:
            raise RuleConfigError("trailing.activation_pct", self.activation_pct,
                                  f"a percent >= {floor} (distance / (1 - distance) for trailing.distance_pct "
                                  f"{self.distance_pct}: armed lower, the stop would sit below the entry)")


def min_trailing_activation(distance_pct: Decimal) -> Decimal:
    """The lowest activation (percent) at which a long's trailing stop sits at or above the entry:
    100 x d / (1 - d) with d = distance_pct / 100, rounded up at the 12th decimal so that the bound
    itself passes the check."""
    exact = distance_pct * _HUNDRED / (_HUNDRED - distance_pct)
    return exact.quantize(Decimal("1e-12"), rounding=ROUND_CEILING).normalize()


@dataclass(frozen=True)
class TimeExit:
    """Close after `max_hold` while PnL >= `min_profit_pct` (default 0: not at a loss; a negative
    value means "exit even at this loss"). Acceptance scenario 4: the hold ends when it meets the
    profit target, not at any price."""

    max_hold: timedelta
    min_profit_pct: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if not isinstance(self.max_hold, timedelta) or self.max_hold <= timedelta(0):
            raise RuleConfigError("time_exit.max_hold", self.max_hold, "a duration > 0")
        _set(self, "min_profit_pct", _number("time_exit.min_profit_pct", self.min_profit_pct))


@dataclass(frozen=True)
class ExitRules:
    """The complete, validated exit configuration for one strategy or the whole exits role."""

    take_profit: TakeProfit | None = None
    breakeven_after_first_step: bool = False
    breakeven_fee_pct: Decimal = DEFAULT_BREAKEVEN_FEE_PCT
    stop_loss_pct: Decimal | None = None
    trailing: Trailing | None = None
    time_exit: TimeExit | None = None
    priority: tuple[ExitReason, ...] = DEFAULT_PRIORITY
    cooldown: timedelta = DEFAULT_COOLDOWN

    def __post_init__(self) -> None:
        self._check_types()
        if not isinstance(self.breakeven_after_first_step, bool):
            raise RuleConfigError("take_profit.breakeven_after_first_step", self.breakeven_after_first_step,
                                  "true or false")
        if self.breakeven_after_first_step and not (self.take_profit and self.take_profit.is_ladder):
            raise RuleConfigError("take_profit.breakeven_after_first_step", True,
                                  "false unless take_profit has ladder steps (there is no first step)")
        _set(self, "breakeven_fee_pct", _in_range("take_profit.breakeven_fee_pct", self.breakeven_fee_pct,
                                                  Decimal(0), None, low_open=False, allowed="a percent >= 0"))
        if self.stop_loss_pct is not None:
            _set(self, "stop_loss_pct", _in_range("stop_loss_pct", self.stop_loss_pct, Decimal(0), Decimal(100),
                                                  low_open=True, high_open=True, allowed="a percent in (0, 100)"))
        _set(self, "priority", _check_priority(self.priority))
        if not isinstance(self.cooldown, timedelta) or self.cooldown < MIN_COOLDOWN:
            raise RuleConfigError("cooldown", self.cooldown, f"a duration >= {MIN_COOLDOWN.total_seconds():g} s")

    def _check_types(self) -> None:
        for name, kind in (("take_profit", TakeProfit), ("trailing", Trailing), ("time_exit", TimeExit)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise RuleConfigError(name, value, f"a {kind.__name__} or None (off)")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: str = "exit_rules") -> "ExitRules":
        """Build from a YAML mapping; errors name the dotted key under `path`. Unknown keys are
        refused so a typo cannot silently switch a stop loss off."""
        return _from_mapping(cls, data, path)


def _check_priority(priority: object) -> tuple[ExitReason, ...]:
    allowed = "each of " + ", ".join(r.value for r in ExitReason) + " exactly once"
    if isinstance(priority, (str, bytes)) or not isinstance(priority, (tuple, list)):
        raise RuleConfigError("priority", priority, allowed)
    try:
        reasons = tuple(ExitReason(p) for p in priority)
    except ValueError:
        raise RuleConfigError("priority", priority, allowed) from None
    # A full permutation gives every rule a distinct rank, so two rules can never tie.
    if len(reasons) != len(ExitReason) or set(reasons) != set(ExitReason):
        raise RuleConfigError("priority", priority, allowed)
    return reasons


_TOP_KEYS = {"take_profit", "stop_loss_pct", "trailing", "time_exit", "priority", "cooldown_seconds"}
_TP_KEYS = {"pct", "steps", "breakeven_after_first_step", "breakeven_fee_pct"}


def _from_mapping(cls: type[ExitRules], data: Mapping[str, Any], path: str) -> ExitRules:
    # Builders below raise keys relative to the rules section; the path is prefixed once, here.
    try:
        return _build(cls, data)
    except RuleConfigError as exc:
        key = f"{path}.{exc.key}" if exc.key else path
        raise RuleConfigError(key, exc.value, exc.allowed) from None


def _build(cls: type[ExitRules], data: Mapping[str, Any]) -> ExitRules:
    top = _mapping("", data, _TOP_KEYS)
    tp, breakeven, fee = _take_profit(top.get("take_profit"))
    kwargs: dict[str, Any] = {"take_profit": tp, "breakeven_after_first_step": breakeven}
    if fee is not None:
        kwargs["breakeven_fee_pct"] = fee
    if top.get("stop_loss_pct") is not None:
        kwargs["stop_loss_pct"] = _number("stop_loss_pct", top["stop_loss_pct"])
    kwargs["trailing"] = _trailing(top.get("trailing"))
    kwargs["time_exit"] = _time_exit(top.get("time_exit"))
    if "priority" in top:
        kwargs["priority"] = top["priority"]
    if top.get("cooldown_seconds") is not None:
        kwargs["cooldown"] = _seconds("cooldown_seconds", top["cooldown_seconds"],
                                      minimum=Decimal(MIN_COOLDOWN.total_seconds()))
    return cls(**kwargs)


def _mapping(key: str, value: object, known: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RuleConfigError(key, value, "a mapping")
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        where = f"{key}.{unknown[0]}" if key else unknown[0]
        raise RuleConfigError(where, value[unknown[0]], "one of the keys " + ", ".join(sorted(known)))
    return value


def _required(key: str, section: Mapping[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if section.get(name) is None:
            raise RuleConfigError(f"{key}.{name}", None, "a number (required)")


def _seconds(key: str, value: object, *, minimum: Decimal | None = None) -> timedelta:
    """A duration > 0 seconds, or >= `minimum` when one is given."""
    low = Decimal(0) if minimum is None else minimum
    seconds = _in_range(key, value, low, None, low_open=minimum is None,
                        allowed=f"a number of seconds >= {minimum}" if minimum is not None else "a number of seconds > 0")
    return timedelta(seconds=float(seconds))


def _take_profit(value: object) -> tuple[TakeProfit | None, bool, Decimal | None]:
    if value is None:
        return None, False, None
    section = _mapping("take_profit", value, _TP_KEYS)
    breakeven = section.get("breakeven_after_first_step", False)
    fee = section.get("breakeven_fee_pct")
    fee = None if fee is None else _number("take_profit.breakeven_fee_pct", fee)
    raw_steps = section.get("steps") or ()
    if isinstance(raw_steps, (str, Mapping)) or not isinstance(raw_steps, (list, tuple)):
        raise RuleConfigError("take_profit.steps", raw_steps, "a list of {at_pct, close} mappings")
    steps = tuple(_ladder_step(f"take_profit.steps[{i}]", s) for i, s in enumerate(raw_steps))
    pct = section.get("pct")
    pct = None if pct is None else _number("take_profit.pct", pct)
    return TakeProfit(pct=pct, steps=steps), breakeven, fee


def _ladder_step(key: str, value: object) -> LadderStep:
    step = _mapping(key, value, {"at_pct", "close"})
    _required(key, step, ("at_pct", "close"))
    try:
        return LadderStep(at_pct=step["at_pct"], close=step["close"])
    except RuleConfigError as exc:
        raise RuleConfigError(f"{key}.{exc.key}", exc.value, exc.allowed) from None


def _trailing(value: object) -> Trailing | None:
    if value is None:
        return None
    section = _mapping("trailing", value, {"activation_pct", "distance_pct"})
    _required("trailing", section, ("activation_pct", "distance_pct"))
    return Trailing(activation_pct=section["activation_pct"], distance_pct=section["distance_pct"])


def _time_exit(value: object) -> TimeExit | None:
    if value is None:
        return None
    section = _mapping("time_exit", value, {"max_hold_seconds", "min_profit_pct"})
    _required("time_exit", section, ("max_hold_seconds",))
    max_hold = _seconds("time_exit.max_hold_seconds", section["max_hold_seconds"])
    min_profit = section.get("min_profit_pct")
    return TimeExit(max_hold=max_hold, min_profit_pct=Decimal(0) if min_profit is None else min_profit)
