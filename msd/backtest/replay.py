"""The replay: candles in, msd's decisions, fills, exits and trainings out, in event time.

Per candle (all assets at one open time): its open is a price the exits see, working orders
fill or expire on it, the exits see the rest of its path (msd.backtest.exiting: the exits
role's step, debounce and per-asset rate, every evaluation and fill in time order), then at
its close the market events msd would have consumed (a confirmed kline of the candle's length
and a ticker with the close as last price and the candle profile's bid/ask) go into msd's
MarketState; labels whose horizon bar is now known are taken, trainings that are due
run, and the signaller's turn (msd.strategies.signal_turn, the daemon's) decides on the
snapshots at that close; its signals then reach order-manager in the turn's order. A gap or a
zero-volume candle is
a no-trade period: nothing fills, nothing is decided on that asset. Nothing here reads the wall
clock: `now` is always the candle's time.
A candle longer than a minute is replayed the same way over its length: one path (the exits'
open -> adverse -> favourable -> close, its middle points at a third and two thirds of the
length), one decision per candle close, fills at the next candle's open. MarketState then
holds N-minute bars (its candle feature profile, msd.market.state): volatility from N-minute returns scaled to a minute,
a return over less than a candle as the expected part of the last candle's, a longer lookback
only when it is whole candles. The spread is fixed, or estimated from the candles
(msd.backtest.spread).
"""
from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from msd.backtest.account import Account
from msd.backtest.candles import Candle, CandleError, Series, grid_start
from msd.backtest import deciding
from msd.backtest.deciding import StrategySlot
from msd.backtest.exiting import AssetExits
from msd.backtest.fills import CostModel, PathPoint, arrival, quotes
from msd.backtest.learner import Quality, StrategyLearning
from msd.backtest.orders import Filled, WorkingOrder, plan, risk_rejection, try_fill
from msd.backtest.replay_exits import ReplayExits
from msd.backtest.spread import half_spread_after
from msd.exchange.orders import DEFAULT_INSTRUMENT, LIMIT, InstrumentRules, OrderTypeThresholds
from msd.learning import lifecycle
from msd.learning.cadence import Cadence, check_due
from msd.learning.costs import CostFill
from msd.learning.outcomes import Decision
from msd.learning.triggers import schedule_decision
from msd.learning.records import ExecutionRecord, MemoryDecisionStore, SignalRecord
from msd.market.state import MarketState
from msd.strategies import signal_turn
from msd.strategies.in_flight import IN_FLIGHT_S
from msd.values.messages import Kline, TickerUpdate

# What msd's features need: an hour of 1-minute returns (61 closed bars) before the first decision.
FEATURE_STARTUP_CANDLES = 61
# The lifecycle effects a run keeps (Replay.lifecycle_log, summarised per strategy); the per-candle
# quality verdicts are not kept.
LOGGED_EFFECTS = (lifecycle.RequestTraining, lifecycle.Degraded, lifecycle.PauseWarmup, lifecycle.LabelsStalled,
                  lifecycle.LabelsBack)


@dataclass(frozen=True)
class Options:
    costs: CostModel
    balance: Decimal = Decimal(10000)
    seed: int | None = None
    train_seconds: float = 60.0
    startup_candles: int = FEATURE_STARTUP_CANDLES
    thresholds: OrderTypeThresholds = OrderTypeThresholds()
    instrument: InstrumentRules = DEFAULT_INSTRUMENT
    shuffled_labels: bool = False      # the control run: trainings see outcomes shuffled in time
    spread_from_candles: bool = False  # Corwin-Schultz estimate, costs.half_spread its floor (msd.backtest.spread)
    spread_factor: Decimal = Decimal(1)    # the cost-sensitivity runs scale the estimate with the floor


@dataclass
class ReplayCounts:
    candles: int = 0
    gaps: int = 0
    zero_volume: int = 0
    rejected: int = 0
    cancelled: int = 0              # a Limit past its time to live, or a reduce-only order with nothing to reduce
    cancelled_by_new_signal: int = 0  # order-manager's cancel_order when a newer signal for the asset arrives
    exits_by_reason: dict = field(default_factory=dict)


class Replay(ReplayExits):
    def __init__(self, config, series: list[Series], options: Options) -> None:
        lengths = {s.length for s in series}
        if len(lengths) > 1:
            raise CandleError(f"candle lengths {sorted(str(x) for x in lengths)}: the assets of one run share one "
                              "candle length (decisions are taken at a common candle close)")
        self.config, self.options = config, options
        self.series = {s.asset: s for s in series}
        self.length = lengths.pop() if lengths else timedelta(minutes=1)
        day_of_candles = max(1, timedelta(days=1) // self.length)
        self.market = MarketState(bar_length=self.length)
        self.account = Account(options.balance)
        self.limits = config.signaller.limits
        self.turn: signal_turn.TurnState | None = None     # the signaller's: runtimes, shared limits, attempts
        self.working: list[WorkingOrder] = []
        self.exits: dict[str, AssetExits] = {}     # per asset, as the exits role keeps them
        self.bars: dict[str, dict[datetime, Candle]] = {a: {} for a in self.series}
        self.volume: dict[str, deque] = {a: deque(maxlen=day_of_candles) for a in self.series}
        self.marks: dict[str, Decimal] = {}
        # The costs in force on each asset: the half spread changes at each close with --spread-from-candles.
        self.costs: dict[str, CostModel] = {a: options.costs for a in self.series}
        self.half_spreads: dict[str, list[Decimal]] = {a: [] for a in self.series}   # per close, for the report
        self.store = MemoryDecisionStore()       # what the learning decisions read, as the daemon's tables
        self.decisions: dict[str, dict] = {}     # signal_id -> what trades.csv says about it
        self.events: list[tuple] = []            # (at, kind, ...) for the look-ahead check and the report
        self.lifecycle_log: list[tuple] = []     # (at, strategy, effect): msd.learning.lifecycle's, as logged live
        self.equity: list[tuple] = []            # (at, account equity, {strategy: pnl})
        self.asset_curve: list[dict] = []        # {asset: pnl} at the same moments
        self.counters = ReplayCounts()
        self.exit_ids = 0
        # Where the run's time goes (benchmarks/backtest.py); measured only, never decided on.
        self.timings: dict[str, float] = {"orders_and_exits": 0.0, "market_state": 0.0, "learning": 0.0,
                                          "training": 0.0, "decisions": 0.0, "accounting": 0.0}
        self.slots: list[StrategySlot] = []
        self.slot_by_id: dict[str, StrategySlot] = {}
        self.next_schedule: datetime | None = None
        self.cadence = Cadence()                 # the lifecycle checks' and warm-up spend reads' (the daemon's)
        self.serving = False                     # the strategies are served (from the first decision round)
        self.exit_instrument = options.instrument

    def _slot(self, params, trainer) -> StrategySlot:
        q = trainer.quality
        learning = StrategyLearning(params.id, trainer.training, Quality(q.threshold, q.hysteresis, q.min_samples,
                                                                         q.window),
                                    params.warmup.budget_usdt, params.warmup.max_duration_s,
                                    params.warmup.unlabelled_loss_pct / 100.0, self.options.train_seconds)
        seed = params.seed if self.options.seed is None else self.options.seed * 1_000_003 + params.seed
        if self.options.shuffled_labels:
            learning.shuffle = random.Random(f"shuffle/{seed}")
        return StrategySlot(params, random.Random(seed), learning)

    # ----- the loop ----------------------------------------------------------------------
    def run(self) -> "Replay":
        by_time: dict[datetime, dict[str, Candle]] = {}
        for asset, s in self.series.items():
            for candle in s.candles:
                by_time.setdefault(candle.open_time, {})[asset] = candle
        times = sorted(by_time)
        if not times:
            raise CandleError("no candles to replay (check --timerange)")
        self.started_at = times[0]
        self.slots = [self._slot(p, self.config.trainer) for p in self.config.signaller.strategies
                      if any(a in self.series for a in p.assets)]
        self.slot_by_id = {slot.params.id: slot for slot in self.slots}
        self.turn = signal_turn.start([slot.params for slot in self.slots], self.limits, self.started_at)
        schedule = self.config.trainer.schedule
        self.next_schedule = schedule.next_after(times[0]) if schedule is not None else None
        for s in self.series.values():
            self.counters.gaps += s.gaps
            self.counters.zero_volume += s.zero_volume
        for index, t in enumerate(times):
            self.step(t, by_time[t], decide_now=index >= self.options.startup_candles)
        return self

    def step(self, t: datetime, candles: dict[str, Candle], *, decide_now: bool) -> None:
        close_at, clock, timings = t + self.length, time.perf_counter(), self.timings
        if decide_now and not self.serving:
            self.serving = True                  # msd starts here: what came before is the features' history
            for slot in self.slots:
                slot.learning.serve(close_at)
        for asset, candle in sorted(candles.items()):
            self.counters.candles += 1
            if candle.traded:
                self._exit_prices(asset, candle, (PathPoint("open", candle.open, candle.open_time),))
                self._work_orders(asset, candle)
                self._exit_prices(asset, candle, self._rest_of_path(asset, candle))
        clock = _lap(timings, "orders_and_exits", clock)
        for asset, candle in sorted(candles.items()):
            self._observe(asset, candle, close_at)
        clock = _lap(timings, "market_state", clock)
        self._learn(close_at)
        clock = _lap(timings, "learning", clock)
        if decide_now:
            self._decide(close_at, {a for a, c in candles.items() if c.traded})
        clock = _lap(timings, "decisions", clock)
        self.equity.append((close_at, self.account.equity(self.marks), self.account.strategy_pnl(self.marks)))
        self.asset_curve.append(self.account.asset_pnl(self.marks))
        _lap(timings, "accounting", clock)

    def _observe(self, asset: str, candle: Candle, close_at: datetime) -> None:
        """The events msd would have consumed at the candle's close (the candle feature profile)."""
        self.bars[asset][candle.open_time] = candle
        self.store.add_bar(asset, candle.open_time, candle.close)
        self.volume[asset].append(candle.volume)
        self.marks[asset] = candle.close
        if self.options.spread_from_candles:
            floor = self.options.costs.half_spread
            half = half_spread_after(self.bars[asset].get(candle.open_time - self.length), candle, floor,
                                     self.options.spread_factor)
            self.half_spreads[asset].append(half)
            if half != self.costs[asset].half_spread:
                self.costs[asset] = replace(self.options.costs, half_spread=half)
        bid, ask = quotes(candle.close, self.costs[asset].half_spread)
        self.market.apply(Kline(asset, candle.open_time, candle.open, candle.high, candle.low, candle.close,
                                candle.volume, Decimal(0), True, close_at))
        self.market.apply(TickerUpdate(asset, close_at, last_price=candle.close, bid=bid, ask=ask,
                                       bid_size=Decimal(1), ask_size=Decimal(1),
                                       volume_24h=sum(self.volume[asset], Decimal(0))))

    # ----- orders and fills -----------------------------------------------------------------
    def _work_orders(self, asset: str, candle: Candle) -> None:
        latency = self.options.costs.latency
        for order in [o for o in self.working if o.asset == asset]:
            arrived = arrival(order.decided_at, latency, candle, self.length)
            if arrived is None:
                continue
            outcome = try_fill(order, candle, self.account.size(asset), self.costs[asset])
            if outcome is None:
                continue
            self.working.remove(order)
            if outcome == "cancelled":
                self.counters.cancelled += 1
                self.events.append((candle.open_time, "cancelled", order.signal_id))
                continue
            at = max(candle.open_time, arrived)
            self._exits_due(asset, at, candle)       # the exits decided before this fill went first
            self._apply_fill(order, outcome, at, candle_at=candle.open_time)

    def _apply_fill(self, order: WorkingOrder, fill: Filled, at: datetime, exit_reason: str | None = None,
                    candle_at: datetime | None = None) -> None:
        asset = order.asset
        self.account.fill(at=at, asset=asset, side=order.side, quantity=fill.quantity, price=fill.price,
                          fee=fill.fee, reference=fill.mid, order_type=order.order_type, signal_id=order.signal_id,
                          strategy=order.strategy, exit_reason=exit_reason, candle_at=candle_at or at)
        self.events.append((at, "fill", order.signal_id, order.side, str(fill.quantity), str(fill.price)))
        if order.strategy is not None:
            slot = self.slot_by_id[order.strategy]
            side = "buy" if order.side == "Buy" else "sell"
            slot.learning.filled(order.signal_id, CostFill(at, side, float(fill.quantity), float(fill.price),
                                                           float(fill.fee), float(order.reference)))
            self.store.add_execution(ExecutionRecord(f"order-{order.signal_id}", order.signal_id, order.strategy,
                                                     asset, side, fill.quantity, fill.price, fill.fee, at))
        exits = self._asset_exits(asset)
        if exits is not None:
            exits.read_row(self.account.positions[asset], self.account.versions[asset], at)

    # ----- learning and deciding -------------------------------------------------------------
    def _bar_close(self, asset: str, end: datetime, now: datetime):
        """The close of the bar ending at `end` as known at `now`; "never" once its lag is over.
        A horizon that ends inside a candle (one longer than the horizon's grid) is read at that
        candle's close: the first close known at or after `end`, never one before it."""
        if end > now:
            return None
        lag = timedelta(seconds=self.config.trainer.training.max_bar_lag_s)
        bars, start = self.bars[asset], grid_start(end - self.length, self.series[asset].candles[0].open_time,
                                                    self.length)
        moment = start
        while moment <= start + lag and moment + self.length <= now:
            if moment in bars:
                return bars[moment].close
            moment += self.length
        return "never" if end + lag <= now else None

    def _learn(self, now: datetime) -> None:
        """The lifecycle step (msd.learning.lifecycle, as the daemon's learning loop calls it) per
        strategy, at the first close at or after each check the daemon's cadence makes due
        (msd.learning.cadence); a training it asks for runs at once, in-process. Labels and
        activations are taken at every close."""
        trainer = self.config.trainer
        for slot in self.slots:
            slot.learning.advance(now, self._bar_close)
        due = check_due(self.cadence, now.timestamp(), trainer.check_interval_s)
        self.cadence = due.cadence
        if not due.check:
            return
        scheduled = None
        if self.next_schedule is not None:
            decision = schedule_decision(trainer.schedule, self.next_schedule, now)
            self.next_schedule = decision.next_run_at
            scheduled = lifecycle.ScheduleChecked(decision.missed) if decision.due else None
        training = trainer.training
        counts = self.store.labelled_counts(training.horizon_s, now)
        for slot in self.slots:
            learning, sid = slot.learning, slot.params.id
            effects = learning.check(now, trainer.data_threshold, counts.get(sid, 0), scheduled, slow=due.slow)
            self.lifecycle_log += [(now, sid, e) for e in effects if isinstance(e, LOGGED_EFFECTS)]
            if any(isinstance(e, lifecycle.RequestTraining) and e.strategy in (None, sid) for e in effects):
                self._train(now, slot)

    def _train(self, now: datetime, slot: StrategySlot) -> None:
        started, sid, training = time.perf_counter(), slot.params.id, self.config.trainer.training
        self.store.add_training_attempt(sid, now)
        version = slot.learning.train(now, self.store.decisions(sid, training.horizon_s, training.max_bar_lag_s),
                                      self.store.cost_fills(sid, None))
        self.timings["training"] += time.perf_counter() - started
        self.events.append((now, "training", sid, None if version is None else
                            (version.number, version.active_from is not None, version.figures["accuracy"])))

    def _decide(self, now: datetime, traded: set[str]) -> None:
        """The signaller's turn on the assets that traded; its signals go out after it, as the
        daemon writes a turn's signals together (the exposure it read saw none of them)."""
        max_age = self.config.signaller.max_data_age_s
        inputs = deciding.turn_inputs(self.slot_by_id, self.limits, lambda asset: self.market.snapshot(asset, now, max_age),
                                      lambda sid, asset, price: self._exposure(asset, price, now), now,
                                      self.config.trainer.training.confidence_threshold)
        turned = signal_turn.step(self.turn, signal_turn.Turn(traded, tradable=traded), now, inputs)
        self.turn = turned.state
        for effect in turned.effects:
            slot = self.slot_by_id[effect.params.id]
            if isinstance(effect, signal_turn.Emitted):
                self._submit(slot, deciding.identified(slot, effect.signal, self.options.seed or 0), now)
            else:
                deciding.count(slot, effect)

    def _exposure(self, asset: str, price: Decimal, now: datetime) -> Decimal:
        """Position plus working entry orders, signed, in quote (as the signaller reads it)."""
        pending = sum(((o.quantity if o.side == "Buy" else -o.quantity) * o.reference
                       for o in self.working if o.asset == asset and o.strategy is not None), Decimal(0))
        in_flight = self.store.in_flight_notional(asset, IN_FLIGHT_S, now)
        return self.account.size(asset) * price + pending + in_flight

    def _submit(self, slot: StrategySlot, signal, now: datetime) -> None:
        mode = "warmup" if signal.is_warmup else "model"
        info = {"mode": mode, "reason": None, "trigger": str(signal.market_data_snapshot.price)}
        size = self.account.size(signal.asset)
        order = plan(signal, strategy=slot.params.id, position_size=size, instrument=self.options.instrument,
                     thresholds=self.options.thresholds, costs=self.costs[signal.asset], info=info)
        wire = _wire(signal)
        self.decisions[signal.signal_id] = {"strategy": slot.params.id, **info, "decided_at": now,
                                            "confidence": signal.confidence, "model_version": signal.model_version,
                                            "side": signal.signal_type, "amount": str(signal.amount), "snapshot": wire}
        slot.learning.decided(Decision(signal.signal_id, slot.params.id, signal.asset, signal.signal_type, now, wire,
                                       float(signal.amount), mode, signal.model_version, float(signal.confidence),
                                       None))
        self.store.add_signal(SignalRecord(signal.signal_id, slot.params.id, signal.asset, signal.signal_type,
                                           signal.amount, float(signal.confidence), mode, signal.model_version, now,
                                           wire))
        self.store.add_order(signal.signal_id)      # order-manager saves an order row (or a REJECTED one) at once
        self.events.append((now, "decision", slot.params.id, signal.asset, signal.signal_type, str(signal.amount),
                            mode, signal.model_version))
        gross = sum((abs(p.size) * self.marks[a] for a, p in self.account.positions.items()), Decimal(0))
        reason = risk_rejection(order, size, gross, self.account.equity(self.marks))
        if reason is not None:
            self.counters.rejected += 1
            self.events.append((now, "rejected", signal.signal_id, reason))
            return
        self._cancel_older(signal.asset, now)
        self.working.append(order)

    def _cancel_older(self, asset: str, now: datetime) -> None:
        """order-manager cancels the asset's older working orders when a new signal's order is
        accepted (CONTRACTS §2.3 `cancel_order`; msd-sim does the same, after the risk check). The
        decision is at a candle close, so a Limit still resting then is cancelled unfilled; a
        Market order waiting here only for its candle has filled on Bybit within milliseconds of
        reaching it, before any later signal (msd-sim fills it at once for that reason)."""
        older = [o for o in self.working if o.asset == asset and o.order_type == LIMIT]
        for order in older:
            self.working.remove(order)
            self.counters.cancelled_by_new_signal += 1
            self.events.append((now, "cancelled", order.signal_id))


def _lap(timings: dict[str, float], phase: str, since: float) -> float:
    now = time.perf_counter()
    timings[phase] += now - since
    return now


def _wire(signal) -> dict:
    s = signal.market_data_snapshot
    return {"price": float(s.price), "spread": None if s.spread is None else float(s.spread),
            "volume_24h": None if s.volume_24h is None else float(s.volume_24h), "volatility": s.volatility,
            "orderbook_depth": s.orderbook_depth, "technical_indicators": s.technical_indicators}
