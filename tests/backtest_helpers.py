"""Configs and candle files for backtest tests."""
from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from msd.config import load_config

T0 = datetime(2024, 3, 4, 0, 0, tzinfo=timezone.utc)
REAL_CANDLES = next((p / "shared" / "data" / "alt_btc-1m-2017-11.json" for p in Path(__file__).resolve().parents
                     if (p / "shared" / "data" / "alt_btc-1m-2017-11.json").is_file()), None)


def strategy(sid: str, asset: str, heuristic: str = "random", randomness: float = 1.0, seed: int = 1,
             **warmup) -> dict:
    return {"id": sid, "assets": [asset], "trigger": "schedule", "seed": seed, "rate": {"rate_per_s": 1, "burst": 5},
            "warmup": {"frequency_s": 60, "heuristic": heuristic, "randomness": randomness, "min_amount_usdt": 10,
                       "max_amount_usdt": 25, "max_exposure_usdt": 200, "budget_usdt": 100000,
                       "max_duration_s": 864000, **warmup}}


def write_config(tmp_path: Path, strategies: list[dict], exits: dict | None = None, trainer: dict | None = None,
                 models_dir: Path | None = None, data_threshold: int = 200):
    data = {"signaller": {"max_data_age_s": 120, "conflicts": {"policy": "allow", "window_s": 60},
                          "global_rate": {"rate_per_s": 10, "burst": 50}, "strategies": strategies},
            "exits": {"rules": exits or {"stop_loss_pct": 2, "trailing": {"activation_pct": 1.5, "distance_pct": 0.8},
                                         "take_profit": {"pct": 3}, "cooldown_seconds": 60}},
            "trainer": {"data_threshold": data_threshold, "schedule": {"daily_at": "02:00"},
                        "training": {"min_new_rows": 150, "min_samples": 60, "min_emitted_calls": 10,
                                     "models_dir": str(models_dir or tmp_path / "models"), **(trainer or {})}}}
    path = tmp_path / "backtest.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, load_config(path, env={})


def random_walk(n: int, seed: int, start: float = 100.0, step: float = 0.002, trend: float = 0.0,
                t0: datetime = T0, minutes: int = 1) -> list[list]:
    rng = random.Random(seed)
    rows, price = [], start
    for i in range(n):
        o = price
        path = [o]
        for _ in range(4):
            path.append(path[-1] * math.exp(rng.gauss(trend / 4, step / 2)))
        c = path[-1]
        rows.append([int((t0 + timedelta(minutes=i * minutes)).timestamp() * 1000), round(o, 6), round(max(path), 6),
                     round(min(path), 6), round(c, 6), round(rng.uniform(1, 100), 4)])
        price = c
    return rows


def write_candles(tmp_path: Path, rows: list[list], name: str = "candles.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(rows))
    return path


def walk_exits(exits, position, paths, half_spread, *, version: int = 1, until: datetime | None = None) -> list:
    """Drive `exits` (msd.backtest.exiting.AssetExits, its row not read yet) as the replay does: the
    position's row read at its open, then each path point after the evaluations due before it;
    each exit fills at once (position-manager's arithmetic) and its row is read. `paths` are
    tuples of msd.backtest.fills.PathPoint; after the last, the evaluations due by `until` (default:
    all). Returns the fills in order."""
    from msd.exchange.positions import apply_fill
    exits.read_row(position, version, position.last_updated)
    fills = []

    def due(until):
        nonlocal position, version
        for fired in exits.due(until, half_spread):
            fills.append(fired)
            closing = "SELL" if position.size > 0 else "Buy"
            position, version = apply_fill(position, exits.asset, closing, fired.decision.quantity, fired.price,
                                           0, fired.at), version + 1
            exits.read_row(position, version, fired.at)

    for path in paths:
        for point in path:
            due(point.at)
            exits.see(point)
    due(until or datetime.max.replace(tzinfo=timezone.utc))
    return fills
