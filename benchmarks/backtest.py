"""`msd backtest` speed: the shipped 10-day real series through the five shipped strategies.

The shipped config's strategies trade BTCUSDT, ETHUSDT and SOLUSDT; the one real series
(shared/data, an altcoin quoted in BTC) stands in for each of them, so every candle is replayed
three times per minute: the figure is asset-candles per second. Retraining (the config's data
threshold and schedule) and exits are included; the control runs are not (the report's
--no-controls), they cost three more replays. Goal: the replay of the whole series in <= 60 s.
Prints the time split by phase (training is part of learning) and, last, one line:
  backtest: N asset-candles in S s (R candles/s); training T s; goal <= 60 s: met|NOT met
Usage: python benchmarks/backtest.py [--config etc/model-service.yaml] [--candles FILE]
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msd.backtest.candles import load_series  # noqa: E402
from msd.backtest.fills import CostModel  # noqa: E402
from msd.backtest.replay import Options, Replay  # noqa: E402
from msd.backtest.summary import summarise  # noqa: E402
from msd.config import load_config  # noqa: E402

DEFAULT_CANDLES = next((p / "shared" / "data" / "alt_btc-1m-2017-11.json" for p in ROOT.parents
                        if (p / "shared" / "data" / "alt_btc-1m-2017-11.json").is_file()),
                       ROOT.parent / "shared" / "data" / "alt_btc-1m-2017-11.json")
GOAL_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "etc" / "model-service.yaml"))
    parser.add_argument("--candles", type=Path, default=DEFAULT_CANDLES)
    args = parser.parse_args()
    config = load_config(args.config, env={})
    assets = sorted({a for p in config.signaller.strategies for a in p.assets})
    started = time.perf_counter()
    series = [load_series(args.candles, asset) for asset in assets]
    loaded = time.perf_counter()
    costs = CostModel(Decimal("0.00055"), Decimal("0.0002"), Decimal("0.0005"), timedelta(milliseconds=200),
                      timedelta(seconds=600))
    replay = Replay(config, series, Options(costs=costs, seed=0)).run()
    replayed = time.perf_counter()
    report = summarise(replay)
    done = time.perf_counter()
    n = replay.counters.candles
    total = replayed - loaded
    print(f"{len(config.signaller.strategies)} strategies on {', '.join(assets)}; {len(series[0].candles)} candles "
          f"per asset ({series[0].gaps} missing minutes)")
    print(f"load {loaded - started:.2f} s; replay {total:.2f} s; summary {done - replayed:.2f} s")
    for phase, seconds in sorted(replay.timings.items(), key=lambda kv: -kv[1]):
        print(f"  {phase:<18} {seconds:7.2f} s  {seconds / total * 100:5.1f} %")
    trainings = sum(s.learning.trainings for s in replay.slots)
    print(f"trainings {trainings}; decisions {sum(s.emitted for s in replay.slots)}; fills "
          f"{report['account']['fills']}; exits {sum(report['exits_by_reason'].values())}")
    print(f"backtest: {n} asset-candles in {total:.1f} s ({n / total:.0f} candles/s); training "
          f"{replay.timings['training']:.1f} s; goal <= {GOAL_S:.0f} s: {'met' if total <= GOAL_S else 'NOT met'}")


if __name__ == "__main__":
    main()
