"""The exits on a candle: the exits role's own step (msd.strategies.exit_step), pessimistically.

The exit state of an asset's position is kept as the exits role keeps it, by the same step and
with the same pacing (`AssetExits`): each point of the candle's path (msd.backtest.fills.exit_path,
the adverse extreme before the favourable one) is a traded price, folded into the peak as it
arrives (`PriceSeen`) and offering an evaluation to the role's debouncer
(msd.strategies.exit_step.debouncer: exits.debounce_s after the last price, at most
exits.debounce_max_delay_s after the first); each read of the positions row (the row being
position-manager's arithmetic from msd.exchange, read when a fill wrote it, as the position
update that announces it makes the role read it) is a `RowRead` offering one too. An evaluation
the debouncer releases is an `Evaluate` at its release time (`now`: the step reads no clock) and
at the newest price then, with the asset's token bucket (exits.asset_rate). The role's
verification passes (every VERIFY_EVERY_S from its start, here the replay's) evaluate too: the
first pass at or after the moment an unchanged price may decide otherwise (`look_again`: a
cooldown's end, a time exit, the asset's next token) is an evaluation; the others would repeat
the last one and are skipped. What the backtest adds is only the market: the path, and a
`SendExit` (the role's urgent, hence Market, signal for exactly its quantity) filling at once at
its level (or the open on a gap), half the spread worse; the row that fill writes is read next,
which releases the exit from flight, as in the daemon. The path is the price: the row's mark
(the last fill) is not a candidate quote.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Callable, Iterator

from msd.backtest.candles import Candle, grid_start
from msd.backtest.fills import PathPoint, exit_base_price, exit_path, worse
from msd.exchange.positions import PositionState
from msd.market.quotes import PriceQuote
from msd.strategies.exit_step import (
    EXIT_ORDER_TYPE, VERIFY_EVERY_S, Evaluate, Evaluated, PriceSeen, RowRead, SendExit, look_again, step,
)
from msd.rules import Debouncer, ExitDecision, ExitRules, ExitState, Instrument, RowFacts
from msd.values.bucket import BucketState, TokenBucket

NAMESPACE = uuid.UUID("0b5e3f7a-8c1d-4a2e-b6f9-3d7c2e1a9f40")
# A path point is a price the candle traded (msd.market.quotes.SOURCES).
PATH_SOURCE = "market_last_price"
VERIFY_EVERY = timedelta(seconds=VERIFY_EVERY_S)


@dataclass(frozen=True)
class ExitFill:
    decision: ExitDecision
    point: PathPoint           # the newest price when it was decided
    base: Decimal              # the price before the spread (the level, or the open on a gap)
    price: Decimal             # the fill, half the spread worse
    signal_id: str
    order_type: str = EXIT_ORDER_TYPE

    @property
    def at(self) -> datetime:
        """When it was decided, and filled (the debouncer's release time, not the point's)."""
        return self.decision.decided_at


def row_facts(asset: str, position: PositionState, version: int) -> RowFacts:
    """The positions row as the exits role reads it: one stable id per asset (CONTRACTS §3.5)."""
    return RowFacts(position_id=str(uuid.uuid5(NAMESPACE, asset)), asset=asset, size=position.size,
                    average_entry_price=position.average_entry_price, current_price=position.current_price,
                    version=version, last_updated=position.last_updated, closed_at=position.closed_at)


class AssetExits:
    """What the exits role keeps for one asset's position: its `ExitState`, the pending
    evaluation of its debouncer and the asset's token bucket (None: full)."""

    def __init__(self, asset: str, rules: ExitRules, instrument: Instrument, pacing: Debouncer,
                 rate: TokenBucket | None, next_id: Callable[[], str], started_at: datetime | None = None):
        self.asset, self.rules, self.instrument, self.rate, self.next_id = asset, rules, instrument, rate, next_id
        self.pacing = pacing
        self.started_at = started_at               # the verification passes' origin (None: none modelled)
        self.state: ExitState | None = None
        self.bucket: BucketState | None = None
        self.last: PathPoint | None = None         # the newest price the market showed
        self.verify_at: datetime | None = None     # the next verification pass that may decide otherwise

    def read_row(self, position: PositionState, version: int, now: datetime) -> None:
        """The row a fill wrote, read at `now`; its position update asks for an evaluation."""
        self.state = step(self.state, RowRead(row_facts(self.asset, position, version)), now).state
        if self.state is not None and self.last is not None:
            self.pacing.offer(self.asset, self.asset, now)

    def see(self, point: PathPoint) -> None:
        """A traded price: folded into the peak at once, an evaluation offered (debounced)."""
        self.last = point
        if self.state is not None:
            self.state = step(self.state, PriceSeen(point.price, point.at), point.at).state
            self.pacing.offer(self.asset, self.asset, point.at)

    def due(self, until: datetime, half_spread: Decimal) -> Iterator[ExitFill]:
        """The evaluations the debouncer releases at or before `until`, each at its release time.
        An exit is yielded as it is sent: the caller fills it and reads the row it writes
        (`read_row`) before asking for the next one."""
        while (at := self._next_at()) is not None and at <= until:
            self.pacing.due(at)
            fill = self._evaluate(at, half_spread)
            if fill is not None:
                yield fill

    def _next_at(self) -> datetime | None:
        return min((at for at in (self.pacing.next_due_at(), self.verify_at) if at is not None), default=None)

    def _pass_at_or_after(self, moment: datetime | None) -> datetime | None:
        """The first verification pass at or after `moment`, on the grid from `started_at`."""
        if moment is None or self.started_at is None:
            return None
        return grid_start(moment, self.started_at, VERIFY_EVERY)

    def _evaluate(self, now: datetime, half_spread: Decimal) -> ExitFill | None:
        state, point = self.state, self.last
        if state is None or not state.ready or point is None:
            self.verify_at = None
            return None
        signal_id = self.next_id()
        quote = PriceQuote(point.price, point.at, PATH_SOURCE)
        stepped = step(state, Evaluate((quote,), self.rules, self.instrument, signal_id, table_price=False,
                                       rate=self.rate, bucket=self.bucket), now)
        self.state, sent = stepped.state, stepped.first(SendExit)
        said = stepped.first(Evaluated)
        self.verify_at = self._pass_at_or_after(look_again(self.state, self.rules, said and said.held, now))
        if sent is None:
            return None
        self.bucket = sent.bucket if sent.bucket is not None else self.bucket   # recorded: its token taken
        base = exit_base_price(point, sent.level)
        closing_side = "SELL" if state.row.size > 0 else "Buy"
        return ExitFill(sent.decision, point, base, worse(closing_side, base, half_spread), signal_id,
                        sent.order_type)


def candle_path(long: bool, candle: Candle, length: timedelta) -> tuple[PathPoint, ...]:
    return exit_path(long, candle, length)
