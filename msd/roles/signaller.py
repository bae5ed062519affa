"""The signaller role: keeps per-asset market state from the consumer's `market` queue.

Strategy evaluation and signal publishing build on this loop (warm-up issue); today it keeps
the market state current and reports what it knows per asset in `msd-ctl status`.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from msd.market.state import MarketState, Unavailable
from msd.roles.dataplane import drain
from msd.roles.runtime import EXIT_OK, RoleContext

log = logging.getLogger("msd.signaller")
STATUS_EVERY_S = 1.0


def asset_report(market: MarketState, assets: list[str], max_age_s: float) -> dict[str, str]:
    now = datetime.now(timezone.utc)
    report = {}
    for asset in assets:
        snap = market.snapshot(asset, now, max_age_s)
        report[asset] = snap.reason if isinstance(snap, Unavailable) else f"{snap.price} age {snap.age_seconds:.1f}s"
    return report


def run(ctx: RoleContext) -> int:
    market = MarketState()
    seen: set[str] = set()
    updates = 0

    def apply(update) -> None:
        nonlocal updates
        market.apply(update)
        seen.add(update.asset)
        updates += 1

    ctx.booted()
    next_status = 0.0
    while not ctx.stopping.is_set():
        ctx.beat()
        drain(ctx.queues["market"], apply, timeout=0.2)
        if time.monotonic() >= next_status:
            ctx.set_status(market_updates=updates,
                           assets=asset_report(market, sorted(seen), ctx.config.signaller.max_data_age_s))
            next_status = time.monotonic() + STATUS_EVERY_S
    return EXIT_OK
