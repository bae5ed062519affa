"""The exit role: tracks open positions and the latest prices from the data plane.

Exit rules (msd.rules) are evaluated on top of this loop (exit-engine issue); today it keeps
the latest update per position and the latest price per asset, and reports them in status.
"""
from __future__ import annotations

import logging
import time

from msd.bus.messages import BookTop, Kline, PositionUpdate, TickerUpdate, Trade
from msd.roles.dataplane import drain
from msd.roles.runtime import EXIT_OK, RoleContext

log = logging.getLogger("msd.exits")
STATUS_EVERY_S = 1.0


def latest_price(update) -> object | None:
    if isinstance(update, Trade):
        return update.price
    if isinstance(update, TickerUpdate):
        return update.last_price
    if isinstance(update, Kline):
        return update.close
    if isinstance(update, BookTop) and update.bid is not None and update.ask is not None:
        return (update.bid + update.ask) / 2
    return None


def run(ctx: RoleContext) -> int:
    positions: dict[tuple[str, str], PositionUpdate] = {}
    prices: dict[str, object] = {}

    def on_position(update: PositionUpdate) -> None:
        key = (update.asset, update.position_id)
        if update.size == 0:
            positions.pop(key, None)
        else:
            positions[key] = update

    def on_price(update) -> None:
        price = latest_price(update)
        if price is not None:
            prices[update.asset] = price

    ctx.booted()
    next_status = 0.0
    while not ctx.stopping.is_set():
        ctx.beat()
        drain(ctx.queues["positions"], on_position, timeout=0.1)
        drain(ctx.queues["exit_prices"], on_price, timeout=0.1)
        if time.monotonic() >= next_status:
            ctx.set_status(open_positions=len(positions), priced_assets=len(prices))
            next_status = time.monotonic() + STATUS_EVERY_S
    return EXIT_OK
