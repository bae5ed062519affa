"""Real market replay: real exchange candles through msd's own learning loop (issue 9).

Each candle becomes the market events msd consumes (a confirmed 1-minute kline, and a ticker
with last price, bid and ask), applied to msd's own MarketState; every candle each strategy
decides as the live signaller would: in warm-up with msd's heuristics (momentum, mean
reversion, random, seeded as in etc/demo.yaml), in model mode with the active version's
calibrated call when it reaches confidence_threshold. Every decision is executed (a fill at
the ask for a buy, the bid for a sell, plus the fee), labelled by msd's outcome function
against the cost estimated from the strategy's own earlier fills, and trained on by msd's
rolling training job logic (fit_and_evaluate + the promotion gate, incumbent rescored on the
candidate's window) each time `--retrain-every` new outcomes are known, never looking ahead.
Warm-up has msd's budget (spend and duration) and pauses when it is spent without a model;
live quality degradation retires a version and falls back, as the signaller does.

What the candles cannot give is assumed, and printed: the spread (`--spread-pct`, constant),
an order book with equal sizes on both sides (so book imbalance is 0 and carries nothing),
no exposure cap (positions are not simulated: each call is judged on its own). What msd does
live and this replay does not, also printed: every call fills at once at the bid/ask (live,
limit orders fill only when the price comes to them, and every decision is still labelled);
no online challenger; a version retired for degradation falls back without the immediate
retrain msd asks for (training stays on the `--retrain-every` schedule). Candles longer than a
minute run on a candle clock: one candle is one msd "minute" (returns, volatility and the
horizon are then in candles, and the time-of-day features are meaningless).

Ends with two lines over the promoted versions' emitted calls (`n/a` when there are none):
  recorded precision R (...)
  promotions N; emitted calls M; recorded accuracy A; out-of-sample pay rate P; net bps per call B
A is the validation accuracy recorded with the version that made each call (over all its
validation decisions, calls or not) and R its recorded precision (the pay rate of its emitted
validation calls), both call-weighted: R, not A, is the figure to compare with P.
Usage: python benchmarks/real_market.py [--candles FILE] [--fee-pct 0.2] [--spread-pct 0.1]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msd.values.messages import Kline, TickerUpdate  # noqa: E402
from msd.learning.costs import CostFill, RollingCost  # noqa: E402
from msd.learning.dataset import build_dataset, features_of  # noqa: E402
from msd.learning.monitoring import budget_verdict, live_quality, warmup_spend  # noqa: E402
from msd.learning.promotion import IncumbentScore  # noqa: E402
from msd.learning.outcomes import Decision, label_decision  # noqa: E402
from msd.market.state import MarketSnapshot, MarketState  # noqa: E402
from msd.ml.features import BUY, SELL, MissingFeature  # noqa: E402
from msd.ml.gate import degradation_check, promotion_decision  # noqa: E402
from msd.ml.params import TrainingParams  # noqa: E402
from msd.ml.training import NotTrainable, fit_and_evaluate, score  # noqa: E402
from msd.strategies.heuristics import Heuristic  # noqa: E402
from msd.strategies.params import WarmupParams  # noqa: E402
from msd.strategies.warmup import draw_amount  # noqa: E402

# shared/ sits beside the checkout (../shared); a git worktree one level deeper looks further up.
DEFAULT_CANDLES = next((p / "shared" / "data" / "alt_btc-1m-2017-11.json" for p in ROOT.parents
                        if (p / "shared" / "data" / "alt_btc-1m-2017-11.json").is_file()),
                       ROOT.parent / "shared" / "data" / "alt_btc-1m-2017-11.json")
ASSET = "ALTBTC"
MINUTE = timedelta(minutes=1)
# The demo strategies' warm-up settings (etc/demo.yaml), one per heuristic.
STRATEGIES = {"momentum": (Heuristic.MOMENTUM, 0.2), "mean_reversion": (Heuristic.MEAN_REVERSION, 0.2),
              "random": (Heuristic.RANDOM, 1.0)}
QUALITY = {"threshold": 0.6, "hysteresis": 0.05, "min_samples": 30, "window": 200}


@dataclass
class Strategy:
    name: str
    warmup: WarmupParams
    rng: random.Random
    decisions: list = field(default_factory=list)        # (index decided, Decision)
    fills: list = field(default_factory=list)
    labelled: list = field(default_factory=list)          # Labelled, in decision order
    next_label: int = 0
    trained_at: int = 0                                   # labelled rows at the last training
    model: object = None
    version: int = 0
    recorded_accuracy: float | None = None
    versions: dict = field(default_factory=dict)          # version -> (recorded accuracy, precision)
    learned_until: dict = field(default_factory=dict)     # version -> last decision time it learned
    overdue: list = field(default_factory=list)           # decisions whose horizon bar never came
    retired: set = field(default_factory=set)
    good: list = field(default_factory=list)              # promoted versions, oldest first
    trainings: int = 0
    promotions: int = 0
    best: str = "no training yet"
    budget_start: datetime | None = None
    paused: str | None = None
    degraded: bool = False
    costs: RollingCost | None = None
    fill_ptr: int = 0


def load_candles(path: Path) -> tuple[list, int]:
    rows = json.loads(path.read_text())
    stamps = np.array([r[0] for r in rows], dtype=np.int64)
    length_ms = int(np.median(np.diff(stamps)))
    return rows, length_ms


def replay(args) -> dict:
    rows, length_ms = load_candles(args.candles)
    first_ms = rows[0][0]
    epoch = datetime.fromtimestamp(first_ms / 1000, timezone.utc)
    minute_of = {int(round((r[0] - first_ms) / length_ms)): r for r in rows}   # candle clock
    last_minute = max(minute_of)
    params = TrainingParams(horizon_s=args.horizon_candles * 60.0, max_bar_lag_s=300.0,
                            round_trip_fee_pct=args.fee_pct, cost_window_s=86400.0, cost_min_fills=20)
    half_spread = args.spread_pct / 200.0
    state = MarketState()
    strategies = [Strategy(name, WarmupParams(min_amount_usdt=Decimal(10), max_amount_usdt=Decimal(25),
                                              max_exposure_usdt=Decimal(10 ** 9), heuristic=h, randomness=r,
                                              budget_usdt=Decimal(str(args.budget_usdt)),
                                              max_duration_s=args.max_duration_s),
                           random.Random(seed))
                  for seed, (name, (h, r)) in enumerate(STRATEGIES.items())]
    for strategy in strategies:
        strategy.costs = RollingCost(params.round_trip_fee, params.cost_window_s, params.cost_min_fills)
    volume: list[float] = []
    for minute in range(last_minute + 1):
        candle = minute_of.get(minute)
        if candle is None:
            continue                                   # a gap in the data: no trading
        start = epoch + minute * MINUTE
        now = start + MINUTE
        close = Decimal(str(candle[4]))
        volume.append(float(candle[5]))
        state.apply(Kline(ASSET, start, Decimal(str(candle[1])), Decimal(str(candle[2])),
                          Decimal(str(candle[3])), close, Decimal(str(candle[5])), Decimal(0), True, now))
        spread = close * Decimal(str(half_spread))
        state.apply(TickerUpdate(ASSET, now, last_price=close, bid=close - spread, ask=close + spread,
                                 bid_size=Decimal(1), ask_size=Decimal(1),
                                 volume_24h=Decimal(str(sum(volume[-1440:])))))
        snapshot = state.snapshot(ASSET, now, 120.0)
        for strategy in strategies:
            label_ready(strategy, minute, minute_of, params)
            maybe_train(strategy, params, args)
            watch(strategy, now, params)
            if isinstance(snapshot, MarketSnapshot) and strategy.paused is None:
                decide(strategy, snapshot, now, minute, params, half_spread, args)
    return summarise(strategies, params, args)


def label_ready(s: Strategy, minute: int, minute_of: dict, params: TrainingParams) -> None:
    """Label the decisions whose horizon bar has closed by `minute` (never later data), against
    the cost msd's RollingCost estimates from the strategy's fills before each decision."""
    horizon, lag = int(params.horizon_s // 60), int(params.max_bar_lag_s // 60)
    while s.next_label < len(s.decisions):
        decided, decision = s.decisions[s.next_label]
        end = decided + horizon                     # the candle that closes the horizon
        if end > minute:
            return
        close_row = next((minute_of[m] for m in range(end, min(end + lag, minute) + 1) if m in minute_of), None)
        if close_row is None and end + lag > minute:
            return                                  # the bar may still come
        s.next_label += 1
        if close_row is None:
            s.overdue.append(decision)              # no bar: unlabelled, charged to the budget
            continue
        while s.fill_ptr < len(s.fills) and s.fills[s.fill_ptr].executed_at < decision.decided_at:
            s.costs.add(s.fills[s.fill_ptr])
            s.fill_ptr += 1
        row = label_decision(replace(decision, horizon_close=float(close_row[4])),
                             s.costs.at(decision.decided_at))
        if row is not None:
            s.labelled.append(row)


def decide(s: Strategy, snapshot: MarketSnapshot, now: datetime, minute: int, params: TrainingParams,
           half_spread: float, args) -> None:
    if s.model is not None:
        x = features_of(Decision("", s.name, ASSET, "buy", now, snapshot.to_wire(), 0, "model", None, 0, None))
        if isinstance(x, MissingFeature):
            return
        calls = s.model.calls(np.asarray(x).reshape(1, -1))
        direction, confidence = int(calls.direction[0]), float(calls.confidence[0])
        if direction not in (BUY, SELL) or confidence < params.confidence_threshold:
            return
        side, mode = ("buy" if direction == BUY else "sell"), "model"
        amount = float(draw_amount(s.rng, s.warmup))
    else:
        call = s.warmup.heuristic.decide(snapshot, s.rng, s.warmup)
        if call is None:
            return
        side, mode, confidence = call.side, "warmup", call.confidence
        amount = float(draw_amount(s.rng, s.warmup))
        if s.budget_start is None:
            s.budget_start = now
    price = float(snapshot.price)
    decision = Decision(f"{s.name}-{minute}", s.name, ASSET, side, now, snapshot.to_wire(), amount, mode,
                        f"v{s.version}" if mode == "model" else None, confidence, None, 1, amount)
    s.decisions.append((minute, decision))
    fill_price = price * (1 + half_spread if side == "buy" else 1 - half_spread)
    quantity = amount / fill_price
    s.fills.append(CostFill(now + timedelta(seconds=1), side, quantity, fill_price,
                            quantity * fill_price * args.fee_pct / 200.0, price))


def maybe_train(s: Strategy, params: TrainingParams, args) -> None:
    if len(s.labelled) - s.trained_at < args.retrain_every:
        return
    s.trained_at = len(s.labelled)
    s.trainings += 1
    dataset = build_dataset([row.decision for row in s.labelled], params, s.fills)
    try:
        candidate = fit_and_evaluate(dataset, params)
    except NotTrainable as exc:
        s.best = f"not trainable: {exc}"
        return
    incumbent = rescore_incumbent(s, dataset, candidate, params)
    decision = promotion_decision(candidate.validation, candidate.baselines, incumbent.metrics,
                                  candidate.validation.n, params.gate(), candidate_vs_active=incumbent.candidate)
    if incumbent.blocking:
        decision = replace(decision, promote=False)
    v = candidate.validation
    s.versions[s.trainings] = (v.accuracy, v.precision)
    s.learned_until[s.trainings] = float(dataset.timestamps[candidate.train_idx].max())
    line = (f"accuracy {v.accuracy:.3f} vs base rate {v.base_rate:.3f}, balanced {v.balanced_accuracy:.3f}, "
            f"{v.n_calls} calls, net {fmt_bps(v.net_return_mean)} bps/call")
    if s.best == "no training yet" or "accuracy" not in s.best or v.accuracy > float(s.best.split()[1]):
        s.best = line
    if decision.promote:
        s.model, s.version, s.recorded_accuracy = candidate.model, s.trainings, v.accuracy
        s.promotions += 1
        s.good.append((s.version, candidate.model, v.accuracy))
        s.paused, s.degraded = None, False


def rescore_incumbent(s: Strategy, dataset, candidate, params: TrainingParams) -> IncumbentScore:
    """As msd.learning.promotion.score_active: the incumbent on the validation decisions it never
    learned, the candidate on the same ones."""
    if s.model is None:
        return IncumbentScore()
    rows = candidate.val_idx[dataset.timestamps[candidate.val_idx] > s.learned_until[s.version]]
    if rows.size < params.min_samples:
        return IncumbentScore(note="incumbent learned the window", blocking=True)
    return IncumbentScore(score(s.model, dataset, rows, params), score(candidate.model, dataset, rows, params))


def watch(s: Strategy, now: datetime, params: TrainingParams) -> None:
    """The signaller's checks: live quality of the active version, the warm-up budget."""
    if s.model is not None:
        calls = [r for r in s.labelled if r.decision.model_version == f"v{s.version}"][-QUALITY["window"]:]
        quality = live_quality(calls)
        degraded = degradation_check(quality.pay_rate, quality.n, QUALITY["threshold"], QUALITY["hysteresis"],
                                     min_samples=QUALITY["min_samples"], was_degraded=s.degraded)
        if degraded:
            s.retired.add(s.version)
            fallback = next(((v, m, a) for v, m, a in reversed(s.good) if v not in s.retired), None)
            s.model, s.version, s.recorded_accuracy = (fallback[1], fallback[0], fallback[2]) if fallback \
                else (None, 0, None)
            s.budget_start = None if s.model is None else s.budget_start
        return
    if s.budget_start is None or s.paused:
        return
    spend = warmup_spend(s.labelled, s.budget_start, now, s.overdue, s.warmup.unlabelled_loss_pct / 100.0)
    verdict = budget_verdict(spend, s.warmup.budget_usdt, s.warmup.max_duration_s)
    if verdict is not None:
        s.paused = f"{verdict[0]} at {now.isoformat()}: {verdict[1]}"


def fmt_bps(value):
    return "n/a" if value is None else f"{value * 1e4:+.1f}"


def summarise(strategies: list[Strategy], params: TrainingParams, args) -> dict:
    print(f"candles {args.candles.name}; round-trip fee {args.fee_pct} %; assumed spread {args.spread_pct} % "
          f"(constant), equal book sizes, no exposure cap; horizon "
          f"{args.horizon_candles} candles; retrain every {args.retrain_every} new outcomes; warm-up budget "
          f"{args.budget_usdt:g} (quote currency) and {args.max_duration_s / 86400:g} days per strategy")
    print("not replayed (live msd differs): every call fills at once at the bid/ask, so there is no "
          "limit-order fill selection (live, every decision is labelled and only fills that happen cost); "
          "no online challenger; a degraded version falls back without the immediate retrain msd asks for")
    emitted = []
    for s in strategies:
        warm = [r for r in s.labelled if r.decision.mode == "warmup"]
        spend = -sum(r.result_usdt for r in warm)
        paid = sum(r.paid for r in warm) / len(warm) if warm else float("nan")
        net = np.mean([(r.move if r.decision.side == "buy" else -r.move) - r.cost for r in warm]) if warm else None
        print(f"{s.name}: {len(s.decisions)} decisions ({len(warm)} labelled warm-up calls: pay rate {paid:.3f}, "
              f"net {fmt_bps(net)} bps/call, spend {spend:.2f}); {s.trainings} trainings, {s.promotions} "
              f"promotions; best validation: {s.best}; "
              f"{'PAUSED ' + s.paused if s.paused else 'not paused'}")
        emitted += [(r, s.versions.get(int(r.decision.model_version[1:]))) for r in s.labelled
                    if r.decision.mode == "model"]
    promotions = sum(s.promotions for s in strategies)
    if emitted:
        recorded = f"{np.mean([a for _, (a, _) in emitted]):.4f}"
        precisions = [p for _, (_, p) in emitted if p is not None]
        precision = f"{np.mean(precisions):.4f}" if precisions else "n/a"
        pay = f"{np.mean([r.paid for r, _ in emitted]):.4f}"
        bps = f"{np.mean([(r.move if r.decision.side == 'buy' else -r.move) - r.cost for r, _ in emitted]) * 1e4:.1f}"
    else:
        recorded = precision = pay = bps = "n/a"
    print(f"recorded precision {precision} (the validation pay rate of the emitted calls of the version that "
          f"made each call, call-weighted: compare it, not recorded accuracy, with the out-of-sample pay rate)")
    print(f"promotions {promotions}; emitted calls {len(emitted)}; recorded accuracy {recorded}; "
          f"out-of-sample pay rate {pay}; net bps per call {bps}")
    return {"promotions": promotions, "emitted": len(emitted)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candles", type=Path, default=DEFAULT_CANDLES,
                        help="JSON list of [open_time_ms, open, high, low, close, volume], oldest first")
    parser.add_argument("--fee-pct", type=float, default=0.2, help="round-trip fee in percent (default 0.2)")
    parser.add_argument("--spread-pct", type=float, default=0.1, help="assumed bid-ask spread in percent of mid")
    parser.add_argument("--horizon-candles", type=int, default=15)
    parser.add_argument("--retrain-every", type=int, default=500, help="new outcomes per training (data threshold)")
    parser.add_argument("--budget-usdt", type=float, default=50.0, help="warm-up budget per strategy (quote units)")
    parser.add_argument("--max-duration-s", type=float, default=7 * 86400.0)
    args = parser.parse_args()
    started = time.perf_counter()
    replay(args)
    print(f"(replayed in {time.perf_counter() - started:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
