"""Online learning benchmark: msd's OnlineLogistic against River's LogisticRegression.

Both learn the same seeded synthetic stream (msd.ml.synthetic.make_dataset, rows in time
order). Two figures per learner:

- throughput: labelled updates per second of the learning calls alone, on a fresh model,
  best of 3 runs
  (River: StandardScaler | LogisticRegression, since OnlineLogistic standardises internally;
  the feature dicts River needs are built before the clock starts);
- progressive (prequential) log-loss: every row is predicted before it is learned, then the
  mean log-loss over the stream. For the mini-batch learners a batch is predicted by the model
  that has learned all earlier batches, so their predictions are up to one batch staler.

River is run with its defaults (SGD, lr 0.01) and with AdaGrad(0.1) + l2 1e-4, the update
OnlineLogistic uses. River is a benchmark-only dependency (benchmarks/requirements.txt).
Usage: python benchmarks/online.py [--rows 100000] [--seed 0] [--strength 2.0]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msd.ml.features import FEATURE_NAMES  # noqa: E402
from msd.ml.models import OnlineConfig, OnlineLogistic  # noqa: E402
from msd.ml.synthetic import make_dataset  # noqa: E402

EPS = 1e-15


def log_loss(p1: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p1, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


REPEAT = 3


def rate(rows: int, fresh: Callable[[], object], learn: Callable[[object], None]) -> float:
    """Best of REPEAT runs of `learn` on a fresh model, as updates per second."""
    best = math.inf
    for _ in range(REPEAT):
        model = fresh()
        start = time.perf_counter()
        learn(model)
        best = min(best, time.perf_counter() - start)
    return rows / best


# ----- msd ---------------------------------------------------------------------------------
def binary(proba: np.ndarray) -> np.ndarray:
    """P(up) from msd's three outcome classes on this two-class stream ("neither" never
    occurs here; its small remaining mass is renormalised away so River's binary log-loss and
    ours measure the same thing)."""
    return proba[:, 1] / (proba[:, 0] + proba[:, 1])
def ours_one(X: np.ndarray, y: np.ndarray, config: OnlineConfig) -> tuple[float, float]:
    """(updates/s of learn_one, prequential log-loss with predict_proba_one then learn_one)."""
    updates = rate(len(y), lambda: OnlineLogistic(X.shape[1], config),
                   lambda m: [m.learn_one(X[i], int(y[i])) for i in range(len(y))])
    model, p1 = OnlineLogistic(X.shape[1], config), np.empty(len(y))
    for i in range(len(y)):
        p1[i] = binary(model.predict_proba(X[i:i + 1]))[0]
        model.learn_one(X[i], int(y[i]))
    return updates, log_loss(p1, y)


def ours_many(X: np.ndarray, y: np.ndarray, config: OnlineConfig,
              chunk: int) -> tuple[float, float]:
    """(updates/s of learn_many over the stream in `chunk`-row arrivals, prequential log-loss
    with each chunk predicted before it is learned)."""
    updates = rate(len(y), lambda: OnlineLogistic(X.shape[1], config),
                   lambda m: [m.learn_many(X[s:s + chunk], y[s:s + chunk])
                              for s in range(0, len(y), chunk)])
    model, p1 = OnlineLogistic(X.shape[1], config), np.empty(len(y))
    for s in range(0, len(y), chunk):
        p1[s:s + chunk] = binary(model.predict_proba(X[s:s + chunk]))
        model.learn_many(X[s:s + chunk], y[s:s + chunk])
    return updates, log_loss(p1, y)


# ----- River -------------------------------------------------------------------------------
def river_model(adagrad: bool):
    from river import linear_model, optim, preprocessing
    if adagrad:
        regression = linear_model.LogisticRegression(optimizer=optim.AdaGrad(0.1), l2=1e-4)
    else:
        regression = linear_model.LogisticRegression()
    return preprocessing.StandardScaler() | regression


def river_one(rows: list[dict], y: np.ndarray, adagrad: bool) -> tuple[float, float]:
    labels = [bool(v) for v in y]
    updates = rate(len(y), lambda: river_model(adagrad),
                   lambda m: [m.learn_one(x, t) for x, t in zip(rows, labels)])
    model, p1 = river_model(adagrad), np.empty(len(y))
    for i, (x, t) in enumerate(zip(rows, labels)):
        p1[i] = model.predict_proba_one(x).get(True, 0.5)
        model.learn_one(x, t)
    return updates, log_loss(p1, y)


def river_many(X: np.ndarray, y: np.ndarray, adagrad: bool, chunk: int) -> tuple[float, float]:
    import pandas as pd
    frames = [pd.DataFrame(X[s:s + chunk], columns=list(FEATURE_NAMES))
              for s in range(0, len(y), chunk)]
    targets = [pd.Series(y[s:s + chunk].astype(bool)) for s in range(0, len(y), chunk)]
    updates = rate(len(y), lambda: river_model(adagrad),
                   lambda m: [m.learn_many(f, t) for f, t in zip(frames, targets)])
    model, p1 = river_model(adagrad), np.empty(len(y))
    for s, (f, t) in zip(range(0, len(y), chunk), zip(frames, targets)):
        p1[s:s + chunk] = model.predict_proba_many(f)[True].to_numpy()
        model.learn_many(f, t)
    return updates, log_loss(p1, y)


def river_results(X: np.ndarray, y: np.ndarray, chunk: int) -> dict[str, tuple[float, float]]:
    try:
        import river
    except ImportError as exc:
        print(f"River is not installed ({exc}); pip install -r benchmarks/requirements.txt. "
              "Only msd's figures are shown.")
        return {}
    rows = [dict(zip(FEATURE_NAMES, map(float, row))) for row in X]
    results = {}
    for adagrad, label in ((False, "River default SGD"), (True, "River AdaGrad")):
        results[f"{label}, learn_one"] = river_one(rows, y, adagrad)
        try:
            results[f"{label}, learn_many({chunk})"] = river_many(X, y, adagrad, chunk)
        except ImportError as exc:   # learn_many needs pandas
            print(f"{label} learn_many skipped: {exc}")
    print(f"river {river.__version__}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strength", type=float, default=2.0, help="signal strength of the stream")
    parser.add_argument("--chunk", type=int, default=256, help="rows per learn_many call")
    parser.add_argument("--batch-sizes", default="1,16,64",
                        help="OnlineConfig.batch_size values to run learn_many with (comma-separated)")
    args = parser.parse_args(argv)
    data = make_dataset(args.rows, strength=args.strength, seed=args.seed)
    X, y = data.X, data.y
    base_rate = float(y.mean())
    config = OnlineConfig()   # the defaults msd runs with (batch_size 16)
    print(f"stream: {args.rows} rows, {X.shape[1]} features, seed {args.seed}, strength "
          f"{args.strength}, P(y=1) {base_rate:.3f}; constant-rate log-loss "
          f"{log_loss(np.full(len(y), base_rate), y):.4f}")
    results = {"msd OnlineLogistic, learn_one": ours_one(X, y, config)}
    for size in (int(text) for text in args.batch_sizes.split(",")):
        results[f"msd OnlineLogistic, learn_many({args.chunk}), batch_size {size}"] = \
            ours_many(X, y, OnlineConfig(batch_size=size), args.chunk)
    results.update(river_results(X, y, args.chunk))
    report(results)
    return 0


def report(results: dict[str, tuple[float, float]]) -> None:
    """Each learner's rate also as a multiple of River's per-row learn_one (its usual use)
    and of the fastest River variant."""
    river_one = results.get("River default SGD, learn_one", (math.nan, math.nan))[0]
    river_rates = [rate for name, (rate, _) in results.items() if name.startswith("River")]
    fastest = max(river_rates, default=math.nan)
    print(f"{'LEARNER':<56} {'UPDATES/S':>10} {'PREQ LOG-LOSS':>13} {'/RIVER ONE':>10} "
          f"{'/RIVER MAX':>10}")
    for name, (rate, loss) in results.items():
        print(f"{name:<56} {rate:>10,.0f} {loss:>13.4f} {rate / river_one:>9.1f}x "
              f"{rate / fastest:>9.1f}x")

if __name__ == "__main__":
    sys.exit(main())
