"""Value types of the exit engine: sides, reasons, position identity, per-position state, decisions.

Numbers: every price, size, percentage and fraction is a `decimal.Decimal`. Inbound messages carry
Decimals (or numeric strings, as Bybit sends them); computing in Decimal keeps thresholds exact, so a
price that sits exactly on a take-profit level triggers it instead of missing by a float ulp.
Times: timezone-aware `datetime`s only, so holding times and cooldowns never mix naive and UTC.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Mapping

STATE_FORMAT_VERSION = 1


class InvalidPositionData(ValueError):
    """An input of the exit engine cannot be used. Callers log it with context and skip the update.

    `field` names the offending input so the log line says which part of the message was bad.
    """

    def __init__(self, field_name: str, value: object, allowed: str):
        self.field, self.value, self.allowed = field_name, value, allowed
        super().__init__(f"{field_name}: {value!r} is invalid; expected {allowed}")


class Side(str, Enum):
    """Direction of an open position."""

    LONG = "long"
    SHORT = "short"

    @classmethod
    def parse(cls, value: object) -> "Side":
        """Accept `long`/`short`, or Bybit's position sides `Buy` (long) / `Sell` (short)."""
        if isinstance(value, Side):
            return value
        text = str(value).strip().lower() if isinstance(value, str) else None
        found = {"long": cls.LONG, "buy": cls.LONG, "short": cls.SHORT, "sell": cls.SHORT}.get(text or "")
        if found is None:
            raise InvalidPositionData("side", value, "one of long, short, Buy, Sell")
        return found

    @property
    def closing_side(self) -> str:
        """The order side that reduces this position: a long is closed by selling, a short by buying."""
        return "sell" if self is Side.LONG else "buy"

    @property
    def sign(self) -> int:
        """+1 when a rising price is profit (long), -1 when a falling price is (short)."""
        return 1 if self is Side.LONG else -1


class ExitReason(str, Enum):
    """Why an exit fired. The value is what goes into signal metadata and metrics labels."""

    TAKE_PROFIT = "take_profit"
    TAKE_PROFIT_STEP = "take_profit_step"
    STOP_LOSS = "stop_loss"
    BREAKEVEN_STOP = "breakeven_stop"
    TRAILING_STOP = "trailing_stop"
    TIME_EXIT = "time_exit"


def to_decimal(name: str, value: object, *, positive: bool = False, non_negative: bool = False) -> Decimal:
    """Convert a number from a message to a finite Decimal or raise InvalidPositionData naming `name`.

    Floats go through `repr` so 0.1 becomes Decimal('0.1'), not its binary expansion. Booleans are
    refused: `True` is an int in Python but never a price.
    """
    allowed = "a finite number" + (" > 0" if positive else " >= 0" if non_negative else "")
    if value is None or isinstance(value, bool):
        raise InvalidPositionData(name, value, allowed)
    try:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidPositionData(name, value, allowed)
            number = Decimal(repr(value))
        elif isinstance(value, (Decimal, int, str)):
            number = Decimal(value.strip() if isinstance(value, str) else value)
        else:
            raise InvalidPositionData(name, value, allowed)
    except InvalidOperation:
        raise InvalidPositionData(name, value, allowed) from None
    if not number.is_finite() or (positive and number <= 0) or (non_negative and number < 0):
        raise InvalidPositionData(name, value, allowed)
    return number


def check_aware(name: str, value: object) -> datetime:
    """Return `value` if it is a timezone-aware datetime, else raise InvalidPositionData."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidPositionData(name, value, "a timezone-aware datetime")
    return value


@dataclass(frozen=True)
class PositionKey:
    """Identity of one position: asset, side and the position's own id (or its open time).

    Exit state is keyed by this, never by asset alone: a new position on the same asset must start
    with fresh state, not inherit the previous position's peak.
    """

    asset: str
    side: Side
    position_id: str

    def __post_init__(self) -> None:
        if not isinstance(self.asset, str) or not self.asset.strip():
            raise InvalidPositionData("asset", self.asset, "a non-empty string such as BTCUSDT")
        object.__setattr__(self, "side", Side.parse(self.side))
        if not isinstance(self.position_id, str) or not self.position_id.strip():
            raise InvalidPositionData("position_id", self.position_id, "a non-empty string (id or open time)")


@dataclass(frozen=True)
class PositionView:
    """What the exit engine needs to know about an open position, validated on construction.

    `size` is the absolute size in base units (the side is in `key`); 0 means the position is closed.
    `entry_price` is the exchange's current average entry price.
    """

    key: PositionKey
    size: Decimal
    entry_price: Decimal
    opened_at: datetime

    def __post_init__(self) -> None:
        if not isinstance(self.key, PositionKey):
            raise InvalidPositionData("key", self.key, "a PositionKey")
        object.__setattr__(self, "size", to_decimal("size", self.size, non_negative=True))
        object.__setattr__(self, "entry_price", to_decimal("entry_price", self.entry_price, positive=True))
        check_aware("opened_at", self.opened_at)


@dataclass(frozen=True)
class ExitState:
    """Everything the rules remember about one position between price updates.

    `extreme_price` is the peak for a long and the trough for a short: the best price seen for the
    position (starting at the entry price, which is a real fill). `highest_pnl_pct` is the running
    maximum of unrealised PnL in percent of entry. `ladder_steps_done` holds indices into the
    take-profit ladder, ascending.
    """

    key: PositionKey
    entry_price: Decimal
    opened_at: datetime
    extreme_price: Decimal
    highest_pnl_pct: Decimal
    ladder_steps_done: tuple[int, ...] = ()
    stop_moved_to_breakeven: bool = False
    last_exit_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (Decimals as strings, times as ISO 8601 with offset) for a jsonb column."""
        return {
            "version": STATE_FORMAT_VERSION,
            "asset": self.key.asset,
            "side": self.key.side.value,
            "position_id": self.key.position_id,
            "entry_price": str(self.entry_price),
            "opened_at": self.opened_at.isoformat(),
            "extreme_price": str(self.extreme_price),
            "highest_pnl_pct": str(self.highest_pnl_pct),
            "ladder_steps_done": list(self.ladder_steps_done),
            "stop_moved_to_breakeven": self.stop_moved_to_breakeven,
            "last_exit_at": self.last_exit_at.isoformat() if self.last_exit_at else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExitState":
        """Inverse of `to_dict`; a damaged row raises InvalidPositionData naming the field."""
        if not isinstance(data, Mapping):
            raise InvalidPositionData("exit_state", data, "a mapping produced by ExitState.to_dict")
        if data.get("version") != STATE_FORMAT_VERSION:
            raise InvalidPositionData("version", data.get("version"), f"{STATE_FORMAT_VERSION}")
        steps = data.get("ladder_steps_done")
        if not isinstance(steps, list) or not all(type(i) is int and i >= 0 for i in steps):
            raise InvalidPositionData("ladder_steps_done", steps, "a list of step indices >= 0")
        moved = data.get("stop_moved_to_breakeven")
        if not isinstance(moved, bool):
            raise InvalidPositionData("stop_moved_to_breakeven", moved, "true or false")
        last = data.get("last_exit_at")
        return cls(
            key=PositionKey(data.get("asset"), Side.parse(data.get("side")), data.get("position_id")),
            entry_price=to_decimal("entry_price", data.get("entry_price"), positive=True),
            opened_at=_parse_time("opened_at", data.get("opened_at")),
            extreme_price=to_decimal("extreme_price", data.get("extreme_price"), positive=True),
            highest_pnl_pct=to_decimal("highest_pnl_pct", data.get("highest_pnl_pct")),
            ladder_steps_done=tuple(sorted(set(steps))),
            stop_moved_to_breakeven=moved,
            last_exit_at=None if last is None else _parse_time("last_exit_at", last),
        )


def _parse_time(name: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise InvalidPositionData(name, value, "an ISO 8601 time with offset")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidPositionData(name, value, "an ISO 8601 time with offset") from None
    return check_aware(name, parsed)


@dataclass(frozen=True)
class ExitDecision:
    """One exit the rules want sent.

    `fraction` is the share of the position's CURRENT size (the `PositionView.size` passed to
    `should_exit`) to close, in (0, 1]; 1 closes everything. `amount_usdt` is that share's notional
    at `trigger_price`, which is the observed price that fired the rule (the rule's own level, e.g.
    the stop price, is in `rule_params["threshold_price"]`). `pnl_pct` is unrealised PnL at
    `trigger_price` in percent of entry, positive when in profit for either side. `rule_params` is
    JSON-safe (Decimals as strings). `also_triggered` lists lower-priority rules that were true on
    the same price, for the audit trail.
    """

    key: PositionKey
    reason: ExitReason
    fraction: Decimal
    trigger_price: Decimal
    entry_price: Decimal
    pnl_pct: Decimal
    amount_usdt: Decimal
    decided_at: datetime
    rule_params: Mapping[str, object] = field(default_factory=dict)
    also_triggered: tuple[ExitReason, ...] = ()

    @property
    def side_to_send(self) -> str:
        """`sell` to close a long, `buy` to close a short."""
        return self.key.side.closing_side

    def metadata(self) -> dict[str, Any]:
        """JSON-safe metadata for the outgoing trading signal (Decimals as strings)."""
        return {
            "exit_reason": self.reason.value,
            "rule_params": dict(self.rule_params),
            "asset": self.key.asset,
            "position_side": self.key.side.value,
            "position_id": self.key.position_id,
            "fraction": str(self.fraction),
            "entry_price": str(self.entry_price),
            "trigger_price": str(self.trigger_price),
            "pnl_pct": str(self.pnl_pct),
            "amount_usdt": str(self.amount_usdt),
            "decided_at": self.decided_at.isoformat(),
            "also_triggered": [r.value for r in self.also_triggered],
        }
