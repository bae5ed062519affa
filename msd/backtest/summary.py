"""From a finished replay to the report's figures (a plain, JSON-safe dict, deterministic)."""
from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from msd.backtest import stats
from msd.learning import lifecycle
from msd.learning.monitoring import traded_notional
from msd.learning.outcomes import call_result

CENT = Decimal("0.01")


def money(value: Decimal) -> str:
    """Quote amounts in the report: to the cent, as text (exact, no float noise)."""
    return str(Decimal(value).quantize(CENT))


def _book_totals(replay) -> dict[str, dict[str, Decimal]]:
    totals: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for (sid, _asset), book in replay.account.books.items():
        totals[sid]["fees"] += book.fees
        totals[sid]["spread_cost"] += book.spread_cost
    return totals


def _curves(replay) -> tuple[list, dict[str, list]]:
    account = [(at, float(eq)) for at, eq, _ in replay.equity]
    per: dict[str, list] = defaultdict(list)
    for at, _eq, pnl in replay.equity:
        for sid in sorted(pnl):
            per[sid].append((at, float(pnl[sid])))
    return account, per


def _pay(labelled: list) -> dict[str, Any]:
    n = len(labelled)
    paid = sum(1 for row in labelled if row.paid)
    nets = [(row.move if row.decision.side == "buy" else -row.move) - row.cost for row in labelled]
    interval = stats.wilson(paid, n)
    net = stats.mean_interval(nets)
    return {"calls": n, "pay_rate": paid / n if n else None, "pay_rate_ci95": list(interval) if interval else None,
            "net_return_per_call": net[0] if net else None, "net_return_ci95": [net[1], net[2]] if net else None}


def _versions(slot) -> list[dict[str, Any]]:
    out = []
    learning = slot.learning
    for version in learning.versions:
        tag = f"v{version.number}"
        calls = [row for row in learning.labelled if row.decision.model_version == tag]
        out.append({"version": version.number, "trained_at": version.trained_at.isoformat(),
                    "active_from": version.active_from.isoformat() if version.active_from else None,
                    "retired_at": version.retired_at.isoformat() if version.retired_at else None,
                    "promoted": version.active_from is not None, "gate": list(version.reasons),
                    "recorded_validation": version.figures, "out_of_sample": _pay(calls)})
    return out


def _strategy(replay, slot, pnl: Decimal, curve: list, totals: dict) -> dict[str, Any]:
    sid, learning = slot.params.id, slot.learning
    closed = [t for t in replay.account.trades if t.strategy == sid]
    won = sum(1 for t in closed if t.pnl > 0)
    daily = stats.daily_pnl_returns(curve, float(replay.options.balance))
    warm = [row for row in learning.labelled if row.decision.mode == "warmup"]
    return {
        "decisions": slot.emitted, "dropped": dict(sorted(slot.dropped.items())),
        "closed_trades": len(closed), "hit_rate": won / len(closed) if closed else None,
        "net_pnl": money(pnl), "fees": money(totals.get("fees", Decimal(0))),
        "spread_cost": money(totals.get("spread_cost", Decimal(0))),
        "sharpe_daily": stats.sharpe(daily), "daily_returns_n": len(daily),
        "max_drawdown": stats.max_drawdown_amount([v for _, v in curve]),
        "warmup": {**_pay(warm), "spend": -sum(call_result(traded_notional(row.decision), row.decision.side,
                                                           row.move, row.cost) for row in warm)},
        "mode_timeline": [[at.isoformat(), text] for at, text in learning.timeline],
        "paused": learning.paused, "trainings": learning.trainings, "droughts": learning.droughts,
        **_lifecycle(replay, sid),
        "gate_attempts": len(learning.versions),
        "gate_passes": sum(1 for v in learning.versions if v.active_from is not None),
        "versions": _versions(slot), "model_calls": _pay([r for r in learning.labelled if r.decision.mode == "model"]),
    }


def _lifecycle(replay, sid: str) -> dict[str, Any]:
    """What msd.learning.lifecycle asked of this strategy (the daemon logs the same effects)."""
    triggers: dict[str, int] = {}
    stalled = []
    for at, strategy, effect in replay.lifecycle_log:
        if strategy != sid:
            continue
        if isinstance(effect, lifecycle.RequestTraining):
            triggers[effect.trigger] = triggers.get(effect.trigger, 0) + 1
        elif isinstance(effect, lifecycle.LabelsStalled):
            stalled.append(at.isoformat())
    return {"training_triggers": dict(sorted(triggers.items())), "labels_stalled_at": stalled}


def summarise(replay) -> dict[str, Any]:
    marks, account = replay.marks, replay.account
    pnl = account.strategy_pnl(marks)
    totals = _book_totals(replay)
    equity_curve, per_curve = _curves(replay)
    balance = float(replay.options.balance)
    days = stats.daily_closes(equity_curve)
    daily = stats.returns([v for _, v in days], balance)
    turnover = sum((f.quantity * f.price for f in account.fills), Decimal(0)) / replay.options.balance
    end_equity = account.equity(marks)
    strategies = {slot.params.id: _strategy(replay, slot, pnl.get(slot.params.id, Decimal(0)),
                                            per_curve.get(slot.params.id, []), totals.get(slot.params.id, {}))
                  for slot in replay.slots}
    extra = {sid: money(v) for sid, v in pnl.items() if sid not in strategies}     # "(no strategy)" / exits
    report = {
        "account": {"balance": money(replay.options.balance), "end_equity": money(end_equity),
                    "net_pnl": money(end_equity - replay.options.balance), "fees": money(account.fees),
                    "spread_cost": money(sum((f.spread_cost for f in account.fills), Decimal(0))),
                    "sharpe_daily": stats.sharpe(daily), "daily_returns_n": len(daily),
                    "max_drawdown_fraction": stats.max_drawdown_fraction([v for _, v in equity_curve]),
                    "turnover": float(turnover), "fills": len(account.fills),
                    "strategy_pnl_sum": money(sum(pnl.values(), Decimal(0)))},
        "strategies": strategies, "other_pnl": extra,
        "assets": _assets(replay), "days": _days(replay, days, balance),
        "exits_by_reason": dict(sorted(replay.counters.exits_by_reason.items())),
        "counts": {"candles": replay.counters.candles, "gaps": replay.counters.gaps,
                   "zero_volume": replay.counters.zero_volume, "rejected": replay.counters.rejected,
                   "cancelled_orders": replay.counters.cancelled,
                   "cancelled_by_new_signal": replay.counters.cancelled_by_new_signal},
        "open_trades": [_trade(t) for t in account.open_trades(marks, replay.equity[-1][0])],
    }
    return stats.rounded(report)


def _trade(trade) -> dict[str, Any]:
    return {"strategy": trade.strategy, "asset": trade.asset, "side": trade.side, "quantity": str(trade.quantity),
            "entry_price": str(trade.entry_price), "opened_at": trade.opened_at.isoformat(), "pnl": money(trade.pnl)}


def _assets(replay) -> dict[str, Any]:
    out = {}
    for asset, series in sorted(replay.series.items()):
        candles = series.candles
        pnl = sum((book.cash + book.open_quantity * replay.marks[asset]
                   for (sid, a), book in replay.account.books.items() if a == asset), Decimal(0))
        first = candles[min(replay.options.startup_candles, len(candles) - 1)].close
        curve = [(at, float(values.get(asset, 0))) for (at, _, _), values in zip(replay.equity, replay.asset_curve)]
        daily = stats.daily_pnl_returns(curve, float(replay.options.balance))
        out[asset] = {"file": series.path, "candles": len(candles), "gaps": series.gaps,
                      "zero_volume": series.zero_volume, "net_pnl": money(pnl),
                      "sharpe_daily": stats.sharpe(daily), "daily_returns_n": len(daily),
                      "max_drawdown": stats.max_drawdown_amount([v for _, v in curve]),
                      "closed_trades": sum(1 for t in replay.account.trades if t.asset == asset),
                      "buy_and_hold_return": float(candles[-1].close / first - 1)}
        if replay.options.spread_from_candles:
            out[asset]["spread_from_candles"] = _spread_figures(replay.half_spreads[asset], replay.options.costs.half_spread)
    return out


def _spread_figures(halves: list[Decimal], floor: Decimal) -> dict[str, Any]:
    """The spread in force after each close (bps): its median and mean, and how often the
    Corwin-Schultz estimate was above the --spread-bps floor."""
    spreads = sorted(float(h) * 20000 for h in halves)
    if not spreads:
        return {"closes": 0}
    return {"closes": len(spreads), "median_bps": spreads[len(spreads) // 2], "mean_bps": sum(spreads) / len(spreads),
            "above_floor": sum(1 for h in halves if h > floor) / len(halves)}


def _days(replay, days: list, balance: float) -> list[dict[str, Any]]:
    trades = defaultdict(list)
    for t in replay.account.trades:
        trades[t.closed_at.date().isoformat()].append(t)
    out, previous = [], balance
    for day, equity in days:
        closed = trades.get(day, [])
        out.append({"day": day, "equity": equity, "pnl": equity - previous, "closed_trades": len(closed),
                    "hit_rate": sum(1 for t in closed if t.pnl > 0) / len(closed) if closed else None})
        previous = equity
    return out
