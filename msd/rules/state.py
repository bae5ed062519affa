"""Per-position exit state: creating it, folding prices into it, and knowing when to start over."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from msd.rules.types import ExitState, PositionView, Side, check_aware, to_decimal

_HUNDRED = Decimal(100)


def pnl_pct(side: Side, entry_price: Decimal, price: Decimal) -> Decimal:
    """Unrealised PnL in percent of entry, positive in profit: long (p - e) / e * 100, short (e - p) / e * 100."""
    return (price - entry_price) * side.sign / entry_price * _HUNDRED


def initial_state(position: PositionView, now: datetime) -> ExitState:
    """Fresh state for a position the engine has not seen before.

    The extreme starts at the entry price: it is a real fill of this position, and starting there
    keeps the peak/trough defined before the first price update arrives. `now` is checked only to
    keep the signature uniform with the rest of the engine (state holds no creation time).
    """
    check_aware("now", now)
    return ExitState(
        key=position.key,
        entry_price=position.entry_price,
        opened_at=position.opened_at,
        extreme_price=position.entry_price,
        highest_pnl_pct=Decimal(0),
    )


def observe_price(state: ExitState, side: Side, price: Decimal) -> ExitState:
    """Fold one price into the state: peak = max for longs, trough = min for shorts, exactly.

    `highest_pnl_pct` is a running maximum (not recomputed from the extreme), so once a trailing
    stop has been armed it stays armed even if the exchange later reports a different average entry.
    """
    side = Side.parse(side)
    if side is not state.key.side:
        raise ValueError(f"side: {side!r} does not match the state's {state.key.side!r}; reset the state first")
    price = to_decimal("price", price, positive=True)
    better = price > state.extreme_price if side is Side.LONG else price < state.extreme_price
    extreme = price if better else state.extreme_price
    highest = max(state.highest_pnl_pct, pnl_pct(side, state.entry_price, price))
    if extreme == state.extreme_price and highest == state.highest_pnl_pct:
        return state
    return replace(state, extreme_price=extreme, highest_pnl_pct=highest)


def reset_needed(state: ExitState, position: PositionView) -> bool:
    """True when `state` belongs to another position than `position`, or the position is closed.

    Another position means a different asset, side (a flip) or position id, or a different open
    time under the same id (exchanges reuse ids per symbol). A changed entry price alone is not a
    reset: adding to a position moves its average entry but it is the same position.
    """
    return (
        state.key != position.key
        or state.opened_at != position.opened_at
        or position.size == 0
    )
