"""Real market replay: real exchange candles through msd's whole decision loop (issue 9), now a
thin use of `msd backtest` (msd.backtest): the three demo heuristics (momentum, mean reversion,
random, seeded as in etc/demo.yaml) on one real series, with msd's warm-up budget, exits,
order-manager's order rules, fills by the backtest's stated rules, labels, retraining every
`--retrain-every` new outcomes, the gate and live-quality retirement, never looking ahead.

What the candles cannot give is assumed and printed (the backtest's candle feature profile and
fill rules, from its report manifest). Candles longer than a minute are refused.

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
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msd.backtest.command import add_arguments, assumptions, options_from, series_from  # noqa: E402
from msd.backtest.replay import Replay  # noqa: E402
from msd.config import load_config  # noqa: E402

DEFAULT_CANDLES = next((p / "shared" / "data" / "alt_btc-1m-2017-11.json" for p in ROOT.parents
                        if (p / "shared" / "data" / "alt_btc-1m-2017-11.json").is_file()),
                       ROOT.parent / "shared" / "data" / "alt_btc-1m-2017-11.json")
ASSET = "ALTBTC"
STRATEGIES = {"momentum": ("momentum", 0.2), "mean_reversion": ("mean_reversion", 0.2), "random": ("random", 1.0)}
QUALITY = {"threshold": 0.6, "hysteresis": 0.05, "min_samples": 30, "window": 200}


def config_file(args, folder: Path) -> Path:
    strategies = [{"id": name, "assets": [ASSET], "trigger": "schedule", "seed": seed,
                   "rate": {"rate_per_s": 1, "burst": 5},
                   "warmup": {"frequency_s": 60, "heuristic": heuristic, "randomness": randomness,
                              "min_amount_usdt": 10, "max_amount_usdt": 25, "max_exposure_usdt": 1000,
                              "budget_usdt": args.budget_usdt, "max_duration_s": args.max_duration_s}}
                  for seed, (name, (heuristic, randomness)) in enumerate(STRATEGIES.items())]
    data = {"signaller": {"max_data_age_s": 120, "conflicts": {"policy": "allow", "window_s": 60},
                          "global_rate": {"rate_per_s": 10, "burst": 50}, "strategies": strategies},
            "trainer": {"data_threshold": args.retrain_every, "schedule": None, "quality": QUALITY,
                        "training": {"horizon_s": args.horizon_candles * 60, "round_trip_fee_pct": args.fee_pct,
                                     "models_dir": str(folder / "models")}}}
    path = folder / "real_market.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summarise(replay) -> None:
    emitted = []
    for slot in replay.slots:
        learning = slot.learning
        versions = {f"v{v.number}": v for v in learning.versions}
        warm = [r for r in learning.labelled if r.decision.mode == "warmup"]
        pay = np.mean([r.paid for r in warm]) if warm else float("nan")
        net = np.mean([(r.move if r.decision.side == "buy" else -r.move) - r.cost for r in warm]) if warm else None
        best = max(learning.versions, key=lambda v: v.figures["accuracy"], default=None)
        print(f"{slot.params.id}: {slot.emitted} decisions ({len(warm)} labelled warm-up calls: pay rate {pay:.3f}, "
              f"net {'n/a' if net is None else f'{net * 1e4:+.1f}'} bps/call); {learning.trainings} trainings, "
              f"{sum(1 for v in learning.versions if v.active_from)} promotions; best validation: "
              + ("none" if best is None else f"accuracy {best.figures['accuracy']:.3f} vs base rate "
                 f"{best.figures['base_rate']:.3f}, {best.figures['n_calls']} calls")
              + f"; {'PAUSED ' + learning.paused if learning.paused else 'not paused'}")
        emitted += [(r, versions[r.decision.model_version]) for r in learning.labelled if r.decision.mode == "model"]
    promotions = sum(1 for s in replay.slots for v in s.learning.versions if v.active_from)
    if emitted:
        recorded = np.mean([v.figures["accuracy"] for _, v in emitted])
        precisions = [v.figures["precision"] for _, v in emitted if v.figures["precision"] is not None]
        precision = np.mean(precisions) if precisions else None
        pay = np.mean([r.paid for r, _ in emitted])
        bps = f"{np.mean([(r.move if r.decision.side == 'buy' else -r.move) - r.cost for r, _ in emitted]) * 1e4:.1f}"
    else:
        recorded = precision = pay = None
        bps = "n/a"
    print(f"recorded precision {fmt(precision)} (the validation pay rate of the emitted calls of the version that "
          f"made each call, call-weighted: compare it, not recorded accuracy, with the out-of-sample pay rate)")
    print(f"promotions {promotions}; emitted calls {len(emitted)}; recorded accuracy {fmt(recorded)}; "
          f"out-of-sample pay rate {fmt(pay)}; net bps per call {bps}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fee-pct", type=float, default=0.2,
                        help="round-trip fee in percent, the label's cost floor (default 0.2); half of it per side")
    parser.add_argument("--spread-pct", type=float, default=0.1, help="assumed bid-ask spread in percent of price")
    parser.add_argument("--horizon-candles", type=int, default=15)
    parser.add_argument("--retrain-every", type=int, default=500, help="new outcomes per training (data threshold)")
    parser.add_argument("--budget-usdt", type=float, default=50.0, help="warm-up budget per strategy (quote units)")
    parser.add_argument("--max-duration-s", type=float, default=7 * 86400.0)
    parser.add_argument("--candles", dest="candle_file", type=Path, default=DEFAULT_CANDLES,
                        help="JSON list of [open_time_ms, open, high, low, close, volume], oldest first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config_path = config_file(args, Path(folder))
        command = argparse.ArgumentParser()
        add_arguments(command)
        bt = command.parse_args(["-c", str(config_path), "--candles", str(args.candle_file), "--asset", ASSET,
                                 "--fee-pct", str(args.fee_pct / 2), "--maker-fee-pct", str(args.fee_pct / 2),
                                 "--spread-bps", str(args.spread_pct * 100), "--seed", "0"])
        config = load_config(config_path, env={})
        options, series = options_from(bt), series_from(bt, config)
        started = time.perf_counter()
        replay = Replay(config, series, options).run()
        print(f"candles {args.candle_file.name}; round-trip fee {args.fee_pct} % ({args.fee_pct / 2:g} % per side, "
              f"taker and maker); horizon {args.horizon_candles} candles; retrain every {args.retrain_every} new "
              f"outcomes; warm-up budget {args.budget_usdt:g} (quote currency) and "
              f"{args.max_duration_s / 86400:g} days per strategy; exits: the config's default rules")
        for line in assumptions(options, series):
            print(f"assumed: {line}")
        summarise(replay)
        print(f"(replayed in {time.perf_counter() - started:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
