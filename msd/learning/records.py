"""What the learning decisions read, behind one interface with two implementations:
PostgreSQL for the daemon (msd.store.decision_store.PgDecisionStore) and memory for the
backtest (MemoryDecisionStore, here). tests/integration/test_decision_store_contract.py runs one
fixture through both and compares the datasets, the outcomes, the in-flight exposure and the
data-threshold trigger counts.

Time is always passed in (`now`, `at`): neither implementation reads a clock to decide
anything, so a replay in event time gets the answers the daemon got live.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Mapping, Protocol

from msd.learning.costs import CostFill
from msd.learning.outcomes import Decision, decision_price

DECIDING_MODES = ("warmup", "model")
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class SignalRecord:
    """A recorded decision (a row of msd.signals)."""
    signal_id: str
    strategy_id: str
    asset: str
    side: str                      # buy | sell
    amount: Decimal
    confidence: float
    mode: str                      # warmup | model
    model_version: str | None
    decided_at: datetime
    snapshot: Mapping[str, Any]


@dataclass(frozen=True)
class ExecutionRecord:
    """One fill of a decision's order (a row of msd.executions)."""
    order_id: str
    signal_id: str
    strategy_id: str
    asset: str
    side: str                      # buy | sell
    quantity: Decimal
    price: Decimal
    fee: Decimal
    executed_at: datetime


class DecisionReads(Protocol):
    """What the learning decisions read. The daemon's rows are written by its own paths (the
    outbox, the consumer, the trainer); a replay writes them with MemoryDecisionStore.add_*."""
    def decisions(self, strategy_id: str, horizon_s: float, lag_s: float) -> list[Decision]: ...
    def cost_fills(self, strategy_id: str, until: datetime | None) -> list[CostFill]: ...
    def labelled_counts(self, horizon_s: float, now: datetime) -> dict[str, int]: ...
    def in_flight_notional(self, asset: str, recent_s: float, now: datetime) -> Decimal: ...


class MemoryDecisionStore:
    """The same answers as PostgreSQL's queries (msd.store.datasets, msd.store.outbox), in memory.
    Signals are expected in decision-time order (a replay adds them as it decides)."""

    def __init__(self) -> None:
        self.signals: dict[str, SignalRecord] = {}
        self.by_strategy: dict[str, list[SignalRecord]] = {}
        self.times: dict[str, list[datetime]] = {}               # created_at per strategy, sorted
        self.ordered: set[str] = set()                            # signals with an order row
        self.executions: dict[str, list[ExecutionRecord]] = {}   # by signal
        self.fills_by_strategy: dict[str, list[ExecutionRecord]] = {}
        self.bars: dict[str, dict[datetime, Decimal]] = {}
        self.trained_at: dict[str, datetime] = {}

    def add_signal(self, signal: SignalRecord) -> None:
        self.signals[signal.signal_id] = signal
        rows, times = self.by_strategy.setdefault(signal.strategy_id, []), self.times.setdefault(signal.strategy_id, [])
        at = bisect.bisect_right(times, signal.decided_at)
        rows.insert(at, signal)
        times.insert(at, signal.decided_at)

    def add_order(self, signal_id: str) -> None:
        self.ordered.add(signal_id)

    def add_execution(self, execution: ExecutionRecord) -> None:
        self.ordered.add(execution.signal_id)
        self.executions.setdefault(execution.signal_id, []).append(execution)
        self.fills_by_strategy.setdefault(execution.strategy_id, []).append(execution)

    def add_bar(self, asset: str, minute: datetime, close: Decimal) -> None:
        self.bars.setdefault(asset, {})[minute] = close

    def add_training_attempt(self, strategy_id: str, at: datetime) -> None:
        self.trained_at[strategy_id] = max(at, self.trained_at.get(strategy_id, at))

    def _horizon_close(self, signal: SignalRecord, horizon: timedelta, lag: timedelta) -> Decimal | None:
        """The first confirmed bar stamped within [decided + horizon - 1 min, ... + lag]."""
        bars = self.bars.get(signal.asset, {})
        first = signal.decided_at + horizon - MINUTE
        minute = first.replace(second=0, microsecond=0)
        minute = minute if minute >= first else minute + MINUTE
        while minute <= first + lag:
            if minute in bars:
                return bars[minute]
            minute += MINUTE
        return None

    def decisions(self, strategy_id: str, horizon_s: float, lag_s: float) -> list[Decision]:
        """Decisions with a recorded horizon close and a usable price, decision-time order."""
        horizon, lag = timedelta(seconds=horizon_s), timedelta(seconds=lag_s)
        out = []
        for s in self.by_strategy.get(strategy_id, []):
            if s.mode not in DECIDING_MODES or decision_price(s.snapshot) is None:
                continue
            close = self._horizon_close(s, horizon, lag)
            if close is None:
                continue
            fills = self.executions.get(s.signal_id, [])
            notional = sum((e.quantity * e.price for e in fills), Decimal(0))
            out.append(Decision(s.signal_id, s.strategy_id, s.asset, s.side, s.decided_at, s.snapshot,
                                float(s.amount), s.mode, s.model_version, float(s.confidence), float(close),
                                len(fills), float(notional) if fills else None))
        return out

    def cost_fills(self, strategy_id: str, until: datetime | None) -> list[CostFill]:
        out = []
        for e in self.fills_by_strategy.get(strategy_id, []):
            reference = decision_price(self.signals[e.signal_id].snapshot)
            if reference is not None and (until is None or e.executed_at < until):
                out.append(CostFill(e.executed_at, e.side, float(e.quantity), float(e.price), float(e.fee),
                                    reference))
        return sorted(out, key=lambda f: f.executed_at)

    def labelled_counts(self, horizon_s: float, now: datetime) -> dict[str, int]:
        """Per strategy: decisions whose horizon ended by `now` and after its last training
        attempt (msd.store.datasets.labelled_since_last_training)."""
        horizon = timedelta(seconds=horizon_s)
        counts = {}
        for sid, times in self.times.items():
            end = bisect.bisect_right(times, now - horizon)
            trained = self.trained_at.get(sid)
            start = 0 if trained is None else bisect.bisect_right(times, trained - horizon)
            if end > start:
                counts[sid] = end - start
        return counts

    def in_flight_notional(self, asset: str, recent_s: float, now: datetime) -> Decimal:
        """Signed amount of recent decisions on `asset` with no order yet (msd.store.outbox)."""
        since = now - timedelta(seconds=recent_s)
        total = Decimal(0)
        for sid, rows in self.by_strategy.items():
            for s in rows[bisect.bisect_right(self.times[sid], since):]:
                if s.asset == asset and s.mode in DECIDING_MODES and s.signal_id not in self.ordered:
                    total += s.amount if s.side == "buy" else -s.amount
        return total
