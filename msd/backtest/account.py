"""The backtest's account: cash, the positions row, and per-strategy FIFO lots.

The account position per asset is position-manager's row (msd.exchange.positions.apply_fill).
Every fill also goes to the books of the strategies it belongs to: an entry fill to the strategy
that decided it; an exit fill (the exit rules close the account's position, whoever opened it)
is split over the strategies holding lots on the closed side, pro rata to their open quantity,
the last share taking the remainder so quantities and fees add up exactly. Within a strategy,
lots close FIFO; a closed lot is a trade (entry, exit, PnL, fees).

Every amount is Decimal in the quote currency. A strategy's PnL is its cash flows plus its open
quantity at the mark; their sum is the account's PnL exactly, because every fill's quantity,
cash and fee are split without loss (tests/unit/test_backtest_account.py).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from msd.exchange.positions import PositionState, apply_fill

ZERO = Decimal(0)
SHARE_GRID = Decimal("1e-12")
BUY = "Buy"


@dataclass(frozen=True)
class FillRecord:
    """One fill of one order as the trade log shows it (a split exit gives one per strategy)."""
    at: datetime
    asset: str
    strategy: str
    side: str                 # Buy | SELL
    quantity: Decimal
    price: Decimal
    fee: Decimal
    spread_cost: Decimal      # paid against the mid (a taker's half spread; negative when a maker earns it)
    order_type: str
    role: str                 # entry | exit
    signal_id: str
    candle_at: datetime       # open time of the candle the fill came from


@dataclass
class Lot:
    strategy: str
    signed: Decimal           # + long, - short, base units still open
    price: Decimal
    opened_at: datetime
    fee_per_unit: Decimal     # entry fee per base unit, carried into the trade's cost
    signal_id: str


@dataclass(frozen=True)
class LotTrade:
    """A closed (or, at the end, still open) part of a lot."""
    strategy: str
    asset: str
    side: str                 # long | short
    quantity: Decimal
    entry_price: Decimal
    exit_price: Decimal | None
    opened_at: datetime
    closed_at: datetime | None
    pnl: Decimal              # after entry and exit fees
    exit_reason: str | None
    signal_id: str


@dataclass
class Book:
    """One strategy's lots and cash flows on one asset."""
    lots: deque[Lot] = field(default_factory=deque)
    cash: Decimal = ZERO          # quote received minus paid, fees included
    fees: Decimal = ZERO
    spread_cost: Decimal = ZERO

    @property
    def open_quantity(self) -> Decimal:
        return sum((lot.signed for lot in self.lots), ZERO)


class Account:
    def __init__(self, balance: Decimal) -> None:
        self.balance = balance
        self.cash = balance
        self.positions: dict[str, PositionState] = {}
        self.versions: dict[str, int] = {}
        self.books: dict[tuple[str, str], Book] = {}
        self.fills: list[FillRecord] = []
        self.trades: list[LotTrade] = []
        self.fees = ZERO

    def size(self, asset: str) -> Decimal:
        position = self.positions.get(asset)
        return position.size if position is not None else ZERO

    def book(self, strategy: str, asset: str) -> Book:
        return self.books.setdefault((strategy, asset), Book())

    # ----- fills -----------------------------------------------------------------------
    def fill(self, *, at: datetime, asset: str, side: str, quantity: Decimal, price: Decimal, fee: Decimal,
             reference: Decimal, order_type: str, signal_id: str, strategy: str | None,
             exit_reason: str | None = None, candle_at: datetime | None = None) -> list[FillRecord]:
        """Apply one fill to the row and the books. `strategy` None: an exit, split pro rata."""
        self.positions[asset] = apply_fill(self.positions.get(asset), asset, side, quantity, price, fee, at)
        self.versions[asset] = self.versions.get(asset, 0) + 1
        signed_cash = -quantity * price if side == BUY else quantity * price
        self.cash += signed_cash - fee
        self.fees += fee
        shares = [(strategy, quantity)] if strategy is not None else self._exit_shares(asset, side, quantity)
        records = []
        left_qty, left_fee = quantity, fee
        for i, (owner, share) in enumerate(shares):
            last = i == len(shares) - 1
            share_fee = left_fee if last else (fee * share / quantity).quantize(SHARE_GRID)
            left_qty, left_fee = left_qty - share, left_fee - share_fee
            spread = (price - reference) * share * (1 if side == BUY else -1)
            record = FillRecord(at, asset, owner, side, share, price, share_fee, spread,
                                order_type, "entry" if strategy is not None else "exit", signal_id, candle_at or at)
            self._book_fill(record, exit_reason)
            records.append(record)
        self.fills.extend(records)
        return records

    def _exit_shares(self, asset: str, side: str, quantity: Decimal) -> list[tuple[str, Decimal]]:
        """Strategies holding lots on the side this fill closes, pro rata; the last takes the rest."""
        closing_long = side != BUY
        holders = sorted((sid, book.open_quantity) for (sid, a), book in self.books.items()
                         if a == asset and (book.open_quantity > 0 if closing_long else book.open_quantity < 0))
        total = sum((abs(q) for _, q in holders), ZERO)
        if total == 0:
            return [("(no strategy)", quantity)]
        shares, given = [], ZERO
        for i, (sid, held) in enumerate(holders):
            # On a 1e-12 grid (far finer than any lot step), so every later sum stays exact.
            share = quantity - given if i == len(holders) - 1 else (quantity * abs(held) / total).quantize(SHARE_GRID)
            shares.append((sid, share))
            given += share
        return shares

    def _book_fill(self, record: FillRecord, exit_reason: str | None) -> None:
        book = self.book(record.strategy, record.asset)
        book.cash += (record.quantity * record.price if record.side != BUY else -record.quantity * record.price)
        book.cash -= record.fee
        book.fees += record.fee
        book.spread_cost += record.spread_cost
        signed = record.quantity if record.side == BUY else -record.quantity
        fee_per_unit = record.fee / record.quantity if record.quantity else ZERO
        while signed and book.lots and (book.lots[0].signed > 0) != (signed > 0):
            lot = book.lots[0]
            closed = min(abs(lot.signed), abs(signed))
            direction = 1 if lot.signed > 0 else -1
            pnl = closed * (record.price - lot.price) * direction - closed * (lot.fee_per_unit + fee_per_unit)
            self.trades.append(LotTrade(record.strategy, record.asset, "long" if direction > 0 else "short", closed,
                                     lot.price, record.price, lot.opened_at, record.at, pnl, exit_reason,
                                     lot.signal_id))
            lot.signed -= closed * direction
            signed += closed * direction
            if lot.signed == 0:
                book.lots.popleft()
        if signed:
            book.lots.append(Lot(record.strategy, signed, record.price, record.at, fee_per_unit, record.signal_id))

    # ----- valuation -------------------------------------------------------------------
    def equity(self, marks: dict[str, Decimal]) -> Decimal:
        return self.cash + sum((p.size * marks[a] for a, p in self.positions.items() if p.size), ZERO)

    def strategy_pnl(self, marks: dict[str, Decimal]) -> dict[str, Decimal]:
        """Cash flows plus open quantity at the mark, per strategy (sums to the account's PnL)."""
        pnl: dict[str, Decimal] = {}
        for (sid, asset), book in self.books.items():
            pnl[sid] = pnl.get(sid, ZERO) + book.cash + book.open_quantity * marks[asset]
        return pnl

    def asset_pnl(self, marks: dict[str, Decimal]) -> dict[str, Decimal]:
        """The same sums per asset (every strategy's book on it)."""
        pnl: dict[str, Decimal] = {}
        for (_sid, asset), book in self.books.items():
            pnl[asset] = pnl.get(asset, ZERO) + book.cash + book.open_quantity * marks[asset]
        return pnl

    def open_trades(self, marks: dict[str, Decimal], at: datetime) -> list[LotTrade]:
        """Lots still open, valued at the mark (after their entry fee), listed as open."""
        trades = []
        for (sid, asset), book in sorted(self.books.items()):
            for lot in book.lots:
                direction = 1 if lot.signed > 0 else -1
                qty = abs(lot.signed)
                pnl = qty * (marks[asset] - lot.price) * direction - qty * lot.fee_per_unit
                trades.append(LotTrade(sid, asset, "long" if direction > 0 else "short", qty, lot.price, None,
                                    lot.opened_at, None, pnl, None, lot.signal_id))
        return trades
