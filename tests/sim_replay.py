"""The paper exchange's market replayed through msd's own ingestion, for learning tests.

msd-sim's generator is advanced in sim time, its output formatted exactly as ws-gateway
publishes it, parsed by msd's codecs and applied to msd's market state; every minute a
warm-up decision (a seeded coin, as the random heuristic) is taken on the snapshot the
signaller would have built. The resulting signals, fills and 1-minute bars are the rows msd's
own tables would hold after running against msd-sim — without waiting for the wall clock.
`sim_series` gives the same generator's 1-minute bars as backtest candles.
"""
from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timedelta, timezone

from msd.backtest.candles import Series, series_from_rows
from msd.bus.codecs import parse_market_event
from msd.market.state import MarketSnapshot, MarketState
from msd.sim.market import CATALOG, MarketGenerator, MarketParams
from msd.sim.ws_gateway import WsGatewayFormatter
from tests.learning_data import Synthetic

ASSET = "BTCUSDT"
STEP = timedelta(seconds=10)


def replay(regime: str, hours: float, *, seed: int, strategy: str, start: datetime,
           warmup_minutes: int = 61, **market) -> Synthetic:
    params = MarketParams(regime=regime, **market)
    generator = MarketGenerator(params, (CATALOG[ASSET],), start, random.Random(seed))
    formatter, state, coin = WsGatewayFormatter(random.Random(seed + 1)), MarketState(), random.Random(seed + 2)
    signals, executions, bars = [], [], {}
    moment, end = start, start + timedelta(hours=hours)
    while moment < end:
        moment += STEP
        for tick in generator.advance(moment):
            for message in formatter.messages(tick):
                state.apply(parse_market_event(message.body, message.headers, now=moment))
            for bar in tick.closed_bars:
                bars[bar.start] = (ASSET, bar.start.isoformat(), bar.open, bar.high, bar.low, bar.close,
                                   bar.volume, bar.turnover, True)
        decided = moment - start >= timedelta(minutes=warmup_minutes) and moment.second == 0
        snapshot = state.snapshot(ASSET, moment, 60.0) if decided else None
        if isinstance(snapshot, MarketSnapshot):
            _decide(len(signals), strategy, seed, moment, snapshot, coin, signals, executions)
    return Synthetic(signals, executions, list(bars.values()), [s[3] for s in signals], [])


def sim_series(regime: str, minutes: int, *, seed: int, assets: tuple[str, ...], start: datetime,
               **market) -> list[Series]:
    """`minutes` of msd-sim's market as the backtest's candles: each asset's 1-minute bars as the
    generator closes them (the bars ws-gateway publishes and msd records in msd.market_bars),
    checked as `msd backtest --from-db` checks recorded bars."""
    generator = MarketGenerator(MarketParams(regime=regime, **market), tuple(CATALOG[a] for a in assets), start,
                                random.Random(seed))
    rows: dict[str, list[tuple]] = {asset: [] for asset in assets}
    for minute in range(1, minutes + 1):
        for tick in generator.advance(start + timedelta(minutes=minute)):
            rows[tick.symbol].extend((b.start, b.open, b.high, b.low, b.close, b.volume) for b in tick.closed_bars)
    return [series_from_rows(asset, f"msd-sim {regime} seed {seed} {asset}", rows[asset]) for asset in assets]


def _decide(i, strategy, seed, moment, snapshot, coin, signals, executions) -> None:
    side = "buy" if coin.random() < 0.5 else "sell"
    signal_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"replay/{strategy}/{seed}/{i}"))
    wire = snapshot.to_wire()
    body = {"signal_id": signal_id, "signal_type": side, "asset": ASSET, "strategy_id": strategy,
            "market_data_snapshot": wire}
    signals.append((signal_id, strategy, ASSET, side, 20, 0.5, "warmup", json.dumps(body), json.dumps(wire),
                    moment.isoformat(), "sent"))
    price = float(snapshot.price)
    executions.append((f"replay-{seed}-{i}", signal_id, strategy, ASSET, side, 0.0002, price, price * 0.0002 * 0.001,
                       0.0002, (moment + timedelta(seconds=1)).isoformat(), "event"))


def days_ago(days: float) -> datetime:
    """`days` before the last UTC midnight: the features include the time of day, so a start
    that moved with the clock gave a different dataset (and a flaky test) every minute."""
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=days)
