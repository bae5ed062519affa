"""How order-manager turns a signal into an order (CONTRACTS §1.2, §3.6). Pure: the standard library and msd.values only.

Quantity (`services/quantity_calculator.py`): amount (quote currency) / snapshot price rounded
DOWN to step = min(lot_size, min_order_qty), raised to the minimum order value rounded UP to the
step, in Python's default 28-digit decimal context as order-manager computes it. reduceOnly
(`order_executor._prepare_bybit_order_params`) only while position-manager's row shows a position
the order reduces: an order against a row that shows flat opens the other way. Order type
(`services/order_type_selector.py`): Market on high confidence, a tight or unknown spread, or
`metadata.urgency`; else Limit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext

from msd.values.parsing import to_decimal

# order-manager parses with Python's default decimal context (28 significant digits).
ORDER_MANAGER_CONTEXT = Context(prec=28)
MARKET = "Market"
LIMIT = "Limit"


@dataclass(frozen=True)
class InstrumentRules:
    """A symbol's `instrument_info` numbers order-manager rounds with (CONTRACTS §3.6).

    The one definition msd-sim, the backtest and the exit rules share (msd.rules re-exports it as
    `Instrument`). Quantities are rounded down to `step` = min(lot_size, min_order_qty); an order
    worth less than `min_order_value` is raised to it. Numbers are parsed once here (a bad one
    raises msd.values.parsing.InvalidValue naming `instrument_info.<field>`); `source` says where
    they came from and takes no part in equality.
    """
    lot_size: Decimal
    min_order_qty: Decimal
    min_order_value: Decimal
    source: str = field(default="instrument_info", compare=False)

    def __post_init__(self) -> None:
        for name in ("lot_size", "min_order_qty"):
            object.__setattr__(self, name, to_decimal(f"instrument_info.{name}", getattr(self, name), positive=True))
        object.__setattr__(self, "min_order_value",
                           to_decimal("instrument_info.min_order_value", self.min_order_value, non_negative=True))

    @property
    def step(self) -> Decimal:
        return min(self.lot_size, self.min_order_qty)


# order-manager's own defaults for a symbol without an instrument_info row (§3.6).
DEFAULT_INSTRUMENT = InstrumentRules(Decimal("0.001"), Decimal("0.001"), Decimal("5"), "order-manager defaults")


@dataclass(frozen=True)
class OrderTypeThresholds:
    """order-manager's ORDERMANAGER_MARKET_ORDER_{CONFIDENCE,SPREAD}_THRESHOLD (defaults 0.9, 0.1)."""
    confidence: Decimal = Decimal("0.9")
    spread_pct: Decimal = Decimal("0.1")      # percent of mid, like the snapshot's spread


def order_quantity(amount: Decimal, price: Decimal, step: Decimal, min_value: Decimal) -> Decimal:
    """amount / price rounded down to the step, raised to the minimum order value (§3.6)."""
    with localcontext(ORDER_MANAGER_CONTEXT):
        quantity = (amount / price / step).to_integral_value(rounding=ROUND_FLOOR) * step
        if quantity * price < min_value:
            quantity = (min_value / price / step).to_integral_value(rounding=ROUND_CEILING) * step
    return quantity


def reduces(side: str, position_size: Decimal) -> bool:
    """Whether an order on `side` ('Buy' / 'SELL') reduces a position of signed `position_size`
    (sell vs long, buy vs short): order-manager then sends it reduceOnly (§3.6)."""
    return position_size < 0 if side == "Buy" else position_size > 0


def reduce_only_cap(side: str, remaining: Decimal, held: Decimal) -> Decimal | None:
    """What is left of a working reduceOnly order against the exchange's position `held`: None when
    there is nothing left to reduce (the exchange cancels it), else at most |held| (it never
    reverses the position it was sent to reduce)."""
    if not reduces(side, held):
        return None
    return min(remaining, abs(held))


def select_order_type(confidence: Decimal, spread_pct: Decimal | None, urgent: bool,
                      thresholds: OrderTypeThresholds = OrderTypeThresholds()) -> str:
    """§1.2: Market if confidence >= 0.9, or spread < 0.1 (a null spread counts as 0), or urgency."""
    if confidence >= thresholds.confidence:
        return MARKET
    if (spread_pct or Decimal(0)) < thresholds.spread_pct:
        return MARKET
    return MARKET if urgent else LIMIT


def order_side(signal_type: str) -> str:
    """The `orders.side` spelling for a signal's type (§2.2: exactly 'Buy' or 'SELL')."""
    return "Buy" if signal_type.lower() == "buy" else "SELL"
