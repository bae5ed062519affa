"""The exits inside the replay: the part of msd.backtest.replay.Replay that keeps each asset's
exits (msd.backtest.exiting.AssetExits, made from the config's exits section), feeds them the
candle's path in time order and fills the exits they send at once (reduceOnly, taker fee).
"""
from __future__ import annotations

from datetime import datetime

from msd.backtest.candles import Candle, grid_start
from msd.backtest.exiting import AssetExits, ExitFill, candle_path
from msd.backtest.fills import PathPoint
from msd.backtest.orders import Filled, WorkingOrder
from msd.strategies.exit_step import debouncer


class ReplayExits:
    def _asset_exits(self, asset: str) -> AssetExits | None:
        """The asset's exits, made with the exits section's rules and pacing; None: disabled."""
        cfg = self.config.exits
        if not cfg.enabled_for(asset):
            return None
        exits = self.exits.get(asset)
        if exits is None:
            exits = self.exits[asset] = AssetExits(asset, cfg.rules_for(asset), self.exit_instrument, debouncer(cfg),
                                                   cfg.asset_rate, self._next_exit_id, self.started_at)
        return exits

    def _rest_of_path(self, asset: str, candle: Candle) -> tuple[PathPoint, ...]:
        """The candle's path after its open, the adverse extreme of the position then held first."""
        exits = self.exits.get(asset)
        state = exits.state if exits is not None else None
        long = state is None or state.row is None or state.row.size >= 0
        return candle_path(long, candle, self.length)[1:]

    def _exit_prices(self, asset: str, candle: Candle, points: tuple[PathPoint, ...]) -> None:
        """The exits see each point, after the evaluations due before it."""
        exits = self._asset_exits(asset)
        if exits is None:
            return
        for point in points:
            self._exits_due(asset, point.at, candle)
            exits.see(point)

    def _exits_due(self, asset: str, until: datetime, candle: Candle) -> None:
        """The exits' evaluations due by `until`; an exit sent fills at once."""
        exits = self._asset_exits(asset)
        if exits is None:
            return
        for fired in exits.due(until, self.costs[asset].half_spread):
            self._exit_fill(asset, fired, candle)

    def _next_exit_id(self) -> str:
        self.exit_ids += 1
        return f"exit-{self.exit_ids}"

    def _exit_fill(self, asset: str, fired: ExitFill, candle: Candle) -> None:
        decision = fired.decision
        side = "SELL" if decision.key.side.value == "long" else "Buy"
        order = WorkingOrder(fired.signal_id, None, asset, side, fired.order_type, decision.quantity, None, fired.at,
                             None, decision.trigger_price, True,
                             {"mode": "exit", "reason": decision.reason.value, "trigger": str(decision.trigger_price)})
        self.decisions[fired.signal_id] = {"strategy": self.config.exits.strategy_id, **order.info,
                                           "decided_at": fired.at, "confidence": 1.0, "model_version": None}
        reason = decision.reason.value
        self.counters.exits_by_reason[reason] = self.counters.exits_by_reason.get(reason, 0) + 1
        quantity = min(decision.quantity, abs(self.account.size(asset)))        # reduceOnly
        fill = Filled(quantity, fired.price, quantity * fired.price * self.costs[asset].taker_fee, fired.base)
        self.events.append((fired.at, "exit", fired.signal_id, reason))
        # Released during a gap in the asset's candles, it came from the candle before the gap.
        candle_at = candle.open_time if fired.at >= candle.open_time else grid_start(
            fired.at - self.length, self.series[asset].candles[0].open_time, self.length)
        self._apply_fill(order, fill, fired.at, exit_reason=reason, candle_at=candle_at)
