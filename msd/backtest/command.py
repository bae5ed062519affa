"""`msd backtest`: options, the run, the files; `msd backtest compare DIR_A DIR_B`."""
from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from msd.backtest.candles import CandleError, Series, cut, load_series, parse_timerange, series_from_rows
from msd.backtest.fills import CostModel
from msd.backtest.replay import FEATURE_STARTUP_CANDLES, Options, Replay
from msd.backtest.report import code_commit, sha256_file, write_json, write_markdown, write_png, write_trades
from msd.backtest.summary import summarise
from msd.errors import ConfigError
from msd.values.parsing import finite_decimal

ROOT = Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("compare", nargs="*", metavar="compare DIR_A DIR_B",
                        help="print two runs' report.json side by side")
    parser.add_argument("-c", "--config", default="etc/model-service.yaml")
    parser.add_argument("--candles", action="append", default=[], metavar="FILE",
                        help="candle file (shared/data/README.md format); repeat with --asset for several assets")
    parser.add_argument("--asset", action="append", default=[], metavar="SYMBOL",
                        help="the symbol of CONFIG's strategies the preceding --candles stands for")
    parser.add_argument("--from-db", action="store_true",
                        help="replay the 1-minute bars msd recorded (msd.market_bars, read only) instead of files")
    parser.add_argument("--assets", nargs="+", default=[], metavar="SYMBOL", help="with --from-db: the assets")
    parser.add_argument("--timerange", help="YYYYMMDD-YYYYMMDD (UTC, end exclusive; either side may be empty)")
    parser.add_argument("--startup-candles", type=int, default=FEATURE_STARTUP_CANDLES,
                        help=f"candles replayed before the first decision (default {FEATURE_STARTUP_CANDLES}: "
                             "an hour of returns for the features), excluded from results")
    parser.add_argument("--balance", default="10000", help="starting quote balance (default 10000)")
    parser.add_argument("--fee-pct", default="0.055", help="taker fee per side, percent (default 0.055)")
    parser.add_argument("--maker-fee-pct", default="0.02", help="maker fee per side for Limit fills (default 0.02)")
    parser.add_argument("--spread-bps", default="10", help="bid-ask spread assumed, bps of price (default 10); "
                                                           "with --spread-from-candles the floor of the estimate")
    parser.add_argument("--spread-from-candles", action="store_true",
                        help="estimate the spread from each two adjacent candles (Corwin-Schultz high-low "
                             "estimator, clipped at 0), never below --spread-bps, which also stands where "
                             "there is no estimate")
    parser.add_argument("--latency-ms", type=int, default=200, help="decision to order latency (default 200)")
    parser.add_argument("--limit-ttl-s", type=float, default=600.0, help="a Limit order's time to live (default 600)")
    parser.add_argument("--seed", type=int, default=None, help="combined with each strategy's seed (default: "
                                                               "the strategies' own seeds, as the daemon)")
    parser.add_argument("--train-seconds", type=float, default=60.0,
                        help="simulated training time before a promoted version serves (default 60)")
    parser.add_argument("--out", default="var/backtest", help="output directory (default var/backtest)")
    parser.add_argument("--no-controls", action="store_true",
                        help="skip the control runs (costs x0.5 and x2, shuffled outcomes) that the report compares")
    parser.add_argument("--check-lookahead", action="store_true",
                        help="instead of a report: rerun with the future poisoned and check nothing before the cut "
                             "changed (exit 1 if it did)")


def _decimal(name: str, text: str, low: Decimal, high: Decimal | None = None) -> Decimal:
    value = finite_decimal(text)
    if value is None or value < low or (high is not None and value > high):
        raise ConfigError(name, text, f"a number in [{low}, {'inf' if high is None else high}]")
    return value


def options_from(args: argparse.Namespace) -> Options:
    if args.latency_ms < 0:
        raise ConfigError("--latency-ms", args.latency_ms, "an integer >= 0")
    if args.startup_candles < 0:
        raise ConfigError("--startup-candles", args.startup_candles, "an integer >= 0")
    costs = CostModel(taker_fee=_decimal("--fee-pct", args.fee_pct, Decimal(0), Decimal(10)) / 100,
                      maker_fee=_decimal("--maker-fee-pct", args.maker_fee_pct, Decimal(-1), Decimal(10)) / 100,
                      half_spread=_decimal("--spread-bps", args.spread_bps, Decimal(0), Decimal(1000)) / 20000,
                      latency=timedelta(milliseconds=args.latency_ms), limit_ttl=timedelta(seconds=args.limit_ttl_s))
    return Options(costs=costs, balance=_decimal("--balance", args.balance, Decimal("0.01")), seed=args.seed,
                   train_seconds=args.train_seconds, startup_candles=args.startup_candles,
                   spread_from_candles=args.spread_from_candles)


def series_from(args: argparse.Namespace, config, read_bars=None) -> list[Series]:
    """The candle series of the run: files, or with --from-db the recorded bars `read_bars(asset)`
    returns (the entry point passes a reader; this package never opens the database)."""
    start, end = parse_timerange(args.timerange) if args.timerange else (None, None)
    if args.from_db:
        if not args.assets or args.candles:
            raise ConfigError("--from-db", args.assets, "--assets SYMBOL ... and no --candles")
        if read_bars is None:
            raise ConfigError("--from-db", True, "run through `msd backtest` (it reads msd.market_bars)")
        return [cut(series_from_rows(a, f"msd.market_bars {a}", read_bars(a)), start, end) for a in args.assets]
    if not args.candles:
        raise ConfigError("--candles", None, "at least one candle file")
    traded = sorted({a for p in config.signaller.strategies for a in p.assets})
    assets = list(args.asset)
    if not assets and len(args.candles) == 1 and len(traded) == 1:
        assets = traded
    if len(assets) != len(args.candles):
        raise ConfigError("--asset", assets, f"one --asset per --candles file, among the config's assets {traded}")
    unknown = [a for a in assets if a not in traded]
    if unknown or len(set(assets)) != len(assets):
        raise ConfigError("--asset", assets, f"distinct symbols the config's strategies trade: {traded}")
    return [cut(load_series(path, asset), start, end) for path, asset in zip(args.candles, assets)]


def assumptions(options: Options, series: list[Series]) -> list[str]:
    c = options.costs
    return [
        "Prices are read in the quote currency the config's amounts use (a file quoted in another currency "
        "stands in for it): amounts, fees and PnL below are in that unit.",
        f"Candle length: {_minutes(series)} minute(s); each candle is replayed as one path over its length and one "
        "decision at its close.",
        f"Candle feature profile: bid/ask = close -/+ half of {_spread_model(options)}, equal "
        "book sizes (order-book imbalance 0), volume_24h = sum of the last day's candles' volume"
        + ("" if _minutes(series) == 1 else "; from candles longer than a minute: volatility = std of the hour's "
           "candle log returns / sqrt(candle minutes), a return over less than a candle = the last candle's return "
           "x lookback / candle minutes (its expected part under a random walk), returns over lookbacks that are not "
           "whole candles absent") + "; models trained in the backtest learn on this profile.",
        f"Fills: Market on the candle the order reaches the exchange in (decision + "
        f"{c.latency.total_seconds() * 1000:g} ms), at its open, half the spread worse; Limit (order-manager's choice, CONTRACTS 1.2) at the decision-time bid/ask when a "
        f"later candle trades through it within {c.limit_ttl.total_seconds():g} s, else cancelled; a newer accepted "
        "signal for the asset cancels the asset's resting Limit orders (order-manager's cancel_order, CONTRACTS 2.3; "
        "its scope, the same asset, and moment, after the new order's risk check, are assumed as in msd-sim).",
        "Exits on each candle's path open -> adverse extreme -> favourable extreme -> close (at its open, a third "
        "and two thirds of its length, its end; a stop before a take-profit in one candle), paced as the daemon's "
        "exits role (exits.debounce_s and debounce_max_delay_s, exits.asset_rate, a verification pass every 5 s), "
        "filled at the rule's level, or at the open on a gap, half the spread worse.",
        f"Fees per side: taker {_plain(c.taker_fee * 100)} %, maker {_plain(c.maker_fee * 100)} %. Risk: no leverage on gross "
        "exposure (an order that would exceed equity is rejected).",
        "Not modelled: order-book depth and queue position, partial fills, funding, position-manager lag.",
        f"Training runs in-process; a promoted version serves from its simulated training time + "
        f"{options.train_seconds:g} s. The first {options.startup_candles} candles only feed the market state.",
        "Gaps and zero-volume candles are no-trade periods: " + ", ".join(
            f"{s.asset}: {s.gaps} missing, {s.zero_volume} zero-volume" for s in series) + ".",
    ]


def _spread_model(options: Options) -> str:
    bps = _plain(options.costs.half_spread * 20000)
    if not options.spread_from_candles:
        return f"a fixed {bps} bps spread (spread model: fixed, --spread-bps)"
    return (f"the spread estimated from the candles (spread model: Corwin-Schultz high-low estimator over the last "
            f"two candles, with the gap between them taken out, clipped at 0; {bps} bps (--spread-bps) is the floor "
            "and stands where there is no estimate: the first candle, after a gap, a zero-volume candle; the "
            "estimate known at a close prices that decision and the fills of the next candle)")


def _minutes(series: list[Series]) -> int:
    """The run's candle length in minutes (one run shares one length: msd.backtest.replay)."""
    return int(series[0].length.total_seconds() // 60) if series else 1


def _digest(series: Series) -> str:
    """The file's sha256, or for recorded bars the sha256 of the candles as replayed."""
    if Path(series.path).is_file():
        return sha256_file(series.path)
    text = "\n".join(f"{c.open_time.isoformat()} {c.open} {c.high} {c.low} {c.close} {c.volume}" for c in series.candles)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: Decimal) -> str:
    return f"{value.normalize():f}"


def manifest(args, options: Options, series: list[Series]) -> dict[str, Any]:
    return {"code_commit": code_commit(ROOT), "config": str(args.config),
            "config_sha256": hashlib.sha256(Path(args.config).read_bytes()).hexdigest(),
            "data": [{"asset": s.asset, "file": s.path, "sha256": _digest(s), "candles": len(s.candles)}
                     for s in series],
            "seed": options.seed, "timerange": args.timerange, "assumptions": assumptions(options, series),
            "options": {"balance": str(options.balance), "fee_pct": args.fee_pct, "maker_fee_pct": args.maker_fee_pct,
                        "spread_bps": args.spread_bps, "spread_from_candles": args.spread_from_candles,
                        "latency_ms": args.latency_ms,
                        "limit_ttl_s": args.limit_ttl_s, "startup_candles": args.startup_candles,
                        "train_seconds": args.train_seconds}}


COST_FACTORS = (Decimal("0.5"), Decimal(2))


def controls(config, series: list[Series], options: Options, report: dict[str, Any]) -> dict[str, Any]:
    """The same backtest with fees and spread x0.5 and x2, and with outcomes shuffled in time
    for training (a gate that works promotes nothing there)."""
    account = report["account"]
    rows = [{"factor": "1", "net_pnl": account["net_pnl"], "fees": account["fees"],
             "spread_cost": account["spread_cost"]}]
    for factor in COST_FACTORS:
        c = options.costs
        costs = replace(c, taker_fee=c.taker_fee * factor, maker_fee=c.maker_fee * factor,
                        half_spread=c.half_spread * factor)
        scaled = replace(options, costs=costs, spread_factor=options.spread_factor * factor)
        other = summarise(Replay(config, series, scaled).run())["account"]
        rows.append({"factor": str(factor), "net_pnl": other["net_pnl"], "fees": other["fees"],
                     "spread_cost": other["spread_cost"]})
    shuffled = Replay(config, series, replace(options, shuffled_labels=True)).run()
    versions = [v for slot in shuffled.slots for v in slot.learning.versions]
    promoted = sum(1 for v in versions if v.active_from is not None)
    return {"cost_sensitivity": sorted(rows, key=lambda r: Decimal(r["factor"])),
            "shuffled_labels": {"trainings": len(versions), "promotions": promoted,
                                "verdict": "promoted nothing" if promoted == 0 else
                                "PROMOTED on shuffled outcomes: the gate let noise through"}}


def run(args: argparse.Namespace, config, read_bars=None) -> dict[str, Any]:
    options = options_from(args)
    series = series_from(args, config, read_bars)
    replay = Replay(config, series, options).run()
    report = {"manifest": manifest(args, options, series), **summarise(replay)}
    report["controls"] = None if args.no_controls else controls(config, series, options, report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(report, out)
    write_trades(replay, out)
    write_markdown(report, out)
    missing = write_png(replay, report, out)
    if missing:
        print(missing)
    return report


def _check_lookahead(args: argparse.Namespace, config, read_bars=None) -> int:
    from msd.backtest.lookahead import check
    result = check(config, series_from(args, config, read_bars), options_from(args))
    print("\n".join(result.lines()))
    return 0 if result.identical_before else 1


COMPARED = ("net_pnl", "end_equity", "fees", "spread_cost", "sharpe_daily", "max_drawdown_fraction", "turnover", "fills")


def compare(dir_a: str, dir_b: str) -> str:
    a, b = (json.loads((Path(d) / "report.json").read_text()) for d in (dir_a, dir_b))
    rows = [("figure", dir_a, dir_b)]
    rows += [(f"account {k}", str(a["account"].get(k)), str(b["account"].get(k))) for k in COMPARED]
    for sid in sorted(set(a["strategies"]) | set(b["strategies"])):
        sa, sb = a["strategies"].get(sid, {}), b["strategies"].get(sid, {})
        for key in ("net_pnl", "decisions", "closed_trades", "hit_rate", "gate_passes"):
            rows.append((f"{sid} {key}", str(sa.get(key, "-")), str(sb.get(key, "-"))))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{width[0]}}  {r[1]:>{width[1]}}  {r[2]:>{width[2]}}" for r in rows)


def main(args: argparse.Namespace, read_bars_from=None) -> int:
    """`read_bars_from(config)`: the entry point's reader of msd.market_bars for --from-db."""
    if args.compare:
        if len(args.compare) != 3 or args.compare[0] != "compare":
            raise ConfigError("backtest", " ".join(args.compare), "`compare DIR_A DIR_B` or options only")
        print(compare(args.compare[1], args.compare[2]))
        return 0
    from msd.config import load_config
    config = load_config(args.config)
    read_bars = read_bars_from(config) if (args.from_db and read_bars_from is not None) else None
    try:
        if args.check_lookahead:
            return _check_lookahead(args, config, read_bars)
        report = run(args, config, read_bars)
    except CandleError as exc:
        print(f"msd backtest: {exc}")
        return 2
    account = report["account"]
    print(f"net PnL {account['net_pnl']} (fees {account['fees']}, spread {account['spread_cost']}); "
          f"{account['fills']} fills; report in {args.out}")
    return 0
