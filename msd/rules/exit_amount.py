"""From "close this much" to the USDT amount order-manager turns back into exactly that quantity.

order-manager reads a signal's `amount` as USDT and computes (CONTRACTS §3.6):

    qty = amount / market_data_snapshot.price, rounded DOWN to step = min(lot_size, min_order_qty)
    if qty x price < min_order_value: qty = min_order_value / price rounded UP to the step

So msd first picks the quantity it means (a multiple of the step, never more than the row's
size), then sends amount = quantity x price exactly, as a decimal string, with that same price in
the snapshot: amount / price is then exactly the quantity, and rounding it down changes nothing.
Rounding the amount to cents (as msd first did) made 0.003 BTC at 97,123.4 an order for 0.002.

A slice worth less than the minimum order value (or below the minimum quantity) would be raised
and over-close, and a remainder below it could never be closed: both are merged into a full
close. A whole position below the minimum is not exited by a signal at all (order-manager would
raise it above the size and open the reverse side).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext
from typing import Iterable

from msd.exchange.orders import ORDER_MANAGER_CONTEXT, order_quantity
from msd.rules.types import Instrument, Side, plain, to_decimal

# An exit amount may exceed |size| x price by at most this fraction; see check_amount. The exact
# encoding needs none: it only pays for a product too long for 28 significant digits.
AMOUNT_PADDING = Decimal("1e-12")
# order-manager nacks a signal whose amount is below this (CONTRACTS §1.2), whatever the minimum.
MIN_AMOUNT_USDT = Decimal("0.01")
_EXACT = Context(prec=60)


class ExitAmountError(ValueError):
    """An exit amount would close more than the position holds: a bug, never sent."""


@dataclass(frozen=True)
class Sizing:
    """The quantity an exit closes, or why it cannot be placed (`held`)."""

    quantity: Decimal = Decimal(0)
    full_close: bool = False
    held: str | None = None                  # "below_min_order_value" | "slice_overlaps_in_flight" | "nothing_left"
    notes: dict[str, object] = field(default_factory=dict)


def floor_to_step(quantity: Decimal, step: Decimal) -> Decimal:
    with localcontext(_EXACT):
        return (quantity / step).to_integral_value(rounding=ROUND_FLOOR) * step


def order_manager_quantity(amount: Decimal, price: Decimal, instrument: Instrument) -> Decimal:
    """What order-manager makes of `amount` at `price` (CONTRACTS §3.6), in its 28-digit context."""
    return order_quantity(amount, price, instrument.step, instrument.min_order_value)


def encode_amount(quantity: Decimal, price: Decimal, instrument: Instrument) -> Decimal:
    """The USDT amount for `quantity` at `price`: the exact product, checked against §3.6.

    Raises ExitAmountError if order-manager's arithmetic would not give back `quantity`.
    """
    with localcontext(_EXACT):
        amount = quantity * price
    if len(amount.as_tuple().digits) > ORDER_MANAGER_CONTEXT.prec:
        # Only reachable with absurdly long decimals: round up at the 28th digit, a relative
        # excess far below AMOUNT_PADDING and far below one step, so the floor still lands on it.
        amount = Context(prec=ORDER_MANAGER_CONTEXT.prec, rounding=ROUND_CEILING).plus(amount)
    if order_manager_quantity(amount, price, instrument) != quantity:
        raise ExitAmountError(f"amount {amount} at {price} would not give back quantity {quantity} "
                              f"(step {instrument.step}, minimum {instrument.min_order_value} USDT)")
    return amount


def check_amount(amount: Decimal, size_abs: Decimal, price: Decimal) -> None:
    """The invariant every exit keeps: amount <= |size| x price x (1 + AMOUNT_PADDING)."""
    with localcontext(_EXACT):
        ceiling = size_abs * price * (1 + AMOUNT_PADDING)
    if not amount <= ceiling:
        raise ExitAmountError(f"exit amount {amount} USDT exceeds the held size {size_abs} x {price}")


def size_exit(wanted: Decimal, size_abs: Decimal, price: Decimal, instrument: Instrument, *,
              cap: Decimal | None = None) -> Sizing:
    """The quantity to send for `wanted` base units of a position of `size_abs` at `price`.

    `wanted >= size_abs` is a full close. `cap` limits the quantity when part of the position is
    already being closed by an exit in flight; then a slice cannot be merged into a full close.
    """
    size_abs = to_decimal("size", size_abs, positive=True)
    price = to_decimal("price", price, positive=True)
    step, minimum = instrument.step, instrument.min_order_value
    notes: dict[str, object] = {"lot_step": plain(step), "min_order_value": plain(minimum),
                                "min_order_qty": plain(instrument.min_order_qty), "instrument_source": instrument.source}
    full = floor_to_step(size_abs, step)
    if full != size_abs:
        notes["size_not_a_step_multiple"] = plain(size_abs - full)     # left open: order-manager cannot close it
    if not _placeable(full, price, instrument):
        return Sizing(held="below_min_order_value", notes=notes)
    if cap is not None:
        quantity = floor_to_step(min(wanted, cap, size_abs), step)
        if not _placeable(quantity, price, instrument):
            return Sizing(held="slice_overlaps_in_flight", notes=notes)
        return Sizing(quantity, quantity == full, notes=notes)
    if wanted >= size_abs:
        return Sizing(full, True, notes=notes)
    quantity = floor_to_step(wanted, step)
    if not _placeable(quantity, price, instrument):
        notes["merged_into_full_close"] = "slice_below_minimum"
        return Sizing(full, True, notes=notes)
    if full - quantity > 0 and not _placeable(full - quantity, price, instrument):
        notes["merged_into_full_close"] = "remainder_below_minimum"
        return Sizing(full, True, notes=notes)
    return Sizing(quantity, quantity == full, notes=notes)


def _placeable(quantity: Decimal, price: Decimal, instrument: Instrument) -> bool:
    """order-manager would send exactly this quantity: at least one step, the minimum quantity and
    the minimum order value (below it the order is raised, over-closing or reversing), and an
    amount it accepts at all (>= 0.01 USDT)."""
    return (quantity > 0 and quantity >= instrument.min_order_qty
            and quantity * price >= max(instrument.min_order_value, MIN_AMOUNT_USDT))


@dataclass(frozen=True)
class Fill:
    """One order's fills as the shared `orders` table shows them (cumulative per order)."""
    side: Side            # the side the order buys into: LONG for a buy, SHORT for a sell
    quantity: Decimal
    price: Decimal | None  # average fill price; None when the table has none


def fill_path_entry(fills: Iterable[Fill]) -> tuple[Decimal | None, Decimal]:
    """position-manager's fill-path arithmetic (CONTRACTS §3.5) from flat over `fills` in order:
    adding averages the entry, a partial close keeps it, crossing zero starts over at that fill's
    price. Returns (entry price, or None when flat or a fill that set it has no price; signed size)."""
    size, entry = Decimal(0), None
    for fill in fills:
        signed = fill.quantity * fill.side.sign
        if size == 0 or (size > 0) == (signed > 0):
            if fill.price is None or (size != 0 and entry is None):
                entry = None
            else:
                with localcontext(_EXACT):
                    entry = (abs(size) * (entry or 0) + fill.quantity * fill.price) / (abs(size) + fill.quantity)
            size += signed
        else:
            after = size + signed
            if after == 0:
                entry = None
            elif (after > 0) != (size > 0):
                entry = fill.price
            size = after
    return entry, size


def crossed_zero(start: Decimal, fills: Iterable[Fill]) -> bool:
    """Whether a position of signed size `start` went flat or flipped over `fills` (in order)."""
    size = start
    for fill in fills:
        after = size + fill.quantity * fill.side.sign
        if after == 0 or (size != 0 and (after > 0) != (size > 0)):
            return True
        size = after
    return False


def position_entries(size: Decimal, fills: list[Fill]) -> tuple[Decimal, ...] | None:
    """Every entry price the position of signed `size` has had, oldest first, replayed from the
    `fills` (chronological, up to now) the way position-manager keeps the entry (CONTRACTS §3.5):
    the fill that opened it (from flat, or crossing zero) sets it, each add averages it, a partial
    close keeps it. None when the fills do not reach back to that opening fill, or one that set
    an entry has no price: nothing can be said then."""
    after = size
    for i in range(len(fills) - 1, -1, -1):
        before = after - fills[i].quantity * fills[i].side.sign
        if before == 0 or (before > 0) != (size > 0):
            return _entries_from(abs(after), fills[i].price, fills[i + 1:], Side.of(size))
        after = before
    return None


def _entries_from(held: Decimal, entry: Decimal | None, adds: list[Fill],
                  side: Side | None) -> tuple[Decimal, ...] | None:
    if entry is None or side is None:
        return None
    entries = [entry]
    for fill in adds:
        if fill.side is not side:           # a partial close keeps the entry
            held -= fill.quantity
            continue
        if fill.price is None:
            return None
        with localcontext(_EXACT):
            entry = (held * entry + fill.quantity * fill.price) / (held + fill.quantity)
        held += fill.quantity
        entries.append(entry)
    return tuple(entries)


def entry_of_an_earlier_position(entry: Decimal, size: Decimal, fills: list[Fill]) -> bool:
    """Whether a stored `entry` belongs to a position before the current one: it is none of the
    entries the current position has had (position_entries; the row keeps 8 decimals, hence the
    tolerance). False when the fills cannot tell."""
    entries = position_entries(size, fills)
    if not entries:
        return False
    tolerance = max(Decimal("1e-8"), entry * Decimal("1e-7"))
    return all(abs(e - entry) > tolerance for e in entries)
