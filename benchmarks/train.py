"""Training benchmark (SC-004: 10^6 records within 30 minutes) on the real PostgreSQL server.

Inserts N labelled executions (signals with snapshots, fills, horizon bars; COPY) into a fresh
database, then runs the training job end to end as the trainer process does, then repeats each
stage on its own to print where the time goes: dataset (query + features), realised PnL (FIFO),
fit and evaluation (walk-forward choice of l2 included), version write. Finally fits
scikit-learn's LogisticRegression on the same standardised training matrix with the same
penalty and prints the time ratio and the validation accuracy difference.
scikit-learn is a benchmark-only dependency (benchmarks/requirements.txt), never a runtime one.
Usage: python benchmarks/train.py [--rows 1000000] [--chunk 100000]
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msd.learning.job import build_strategy_dataset, train_strategies  # noqa: E402
from msd.learning.promotion import (IncumbentScore, batch_publication, publish_version,  # noqa: E402
                                    realised_figures)
from msd.ml.models import LogisticConfig, LogisticModel  # noqa: E402
from msd.ml.training import TrainingParams, fit_and_evaluate  # noqa: E402
from msd.store.datasets import LabelWindow, dataset_sizes  # noqa: E402
from msd.store.db import Database  # noqa: E402
from msd.store.migrate import apply_migrations  # noqa: E402
from tests import learning_data  # noqa: E402
from tests.fixtures.pg import create_database, drop_database  # noqa: E402

STRATEGY = "momentum_v1"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Stages:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []

    def timed(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.rows.append((name, time.perf_counter() - start, peak_rss_mb()))
        print(f"  {name:<34} {self.rows[-1][1]:9.2f} s   peak RSS {self.rows[-1][2]:8.0f} MB",
              flush=True)
        return result


def populate(dsn: str, rows: int, chunk: int) -> None:
    """In a child process, so the peak RSS printed for the stages is the training's own."""
    child = multiprocessing.get_context("fork").Process(target=_populate, args=(dsn, rows, chunk))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"populating the database failed (exit code {child.exitcode})")


def _populate(dsn: str, rows: int, chunk: int) -> None:
    db = Database(dsn)
    for index, offset in enumerate(range(0, rows, chunk)):
        n = min(chunk, rows - offset)
        data = learning_data.synthetic(n, strength=2.0, seed=index,
                                       start=learning_data.START + timedelta(minutes=offset))
        with db.transaction() as conn:
            learning_data.insert(conn, data)
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("ANALYZE msd.signals; ANALYZE msd.executions; ANALYZE msd.market_bars")


def build(db: Database, params: TrainingParams):
    return build_strategy_dataset(db, STRATEGY, params)


def sklearn_comparison(dataset, candidate) -> None:
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        print(f"\nscikit-learn is not installed ({exc}); pip install -r benchmarks/requirements.txt "
              "for the comparison.")
        return
    X_train, y_train = dataset.X[candidate.fit_idx], dataset.y[candidate.fit_idx]
    X_val, y_val = dataset.X[candidate.val_idx], dataset.y[candidate.val_idx]
    mean, scale = X_train.mean(axis=0), X_train.std(axis=0)
    scale[scale == 0] = 1.0
    start = time.perf_counter()
    ours = LogisticModel(LogisticConfig(l2=candidate.l2)).fit(X_train, y_train)
    ours_s = time.perf_counter() - start
    # Same objective: mean log-loss + l2/2 |W|^2 on standardised features (multinomial, free
    # intercepts) <=> summed log-loss + n l2/2 |W|^2 <=> C = 1 / (n l2).
    start = time.perf_counter()
    theirs = LogisticRegression(C=1.0 / (candidate.l2 * len(y_train)), max_iter=1000, tol=1e-8)
    theirs.fit((X_train - mean) / scale, y_train)
    theirs_s = time.perf_counter() - start
    # agreement on the most likely outcome class (the call rule is msd's own, sklearn has none)
    ours_acc = float(np.mean(ours.predict_proba(X_val).argmax(axis=1) == y_val))
    theirs_acc = float(np.mean(theirs.predict((X_val - mean) / scale) == y_val))
    print(f"\nfit on {len(y_train):,} rows x {X_train.shape[1]} features, 3 classes (l2={candidate.l2:g}):")
    print(f"  msd LogisticModel          {ours_s:8.2f} s   most-likely-class agreement {ours_acc:.5f}")
    print(f"  sklearn LogisticRegression {theirs_s:8.2f} s   most-likely-class agreement {theirs_acc:.5f}")
    print(f"  time ratio msd/sklearn {ours_s / theirs_s:.2f}; accuracy difference "
          f"{ours_acc - theirs_acc:+.5f}; max |coef diff| "
          f"{np.max(np.abs(ours.predict_proba(X_val) - theirs.predict_proba((X_val - mean) / scale))):.2e} "
          "(max |probability diff|)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    args = parser.parse_args()
    dsn = create_database("msd_bench")
    models_dir = tempfile.mkdtemp(prefix="msd-bench-models-")
    params = learning_data.params(models_dir=models_dir, min_new_rows=1)
    try:
        apply_migrations(dsn)
        db = Database(dsn)
        stages = Stages()
        print(f"{args.rows:,} labelled executions; models in {models_dir}")
        stages.timed("insert (COPY, child process)", populate, dsn, args.rows, args.chunk)
        ctx = SimpleNamespace(config=None, beat=lambda: None)
        summary = stages.timed("training job end to end", train_strategies, ctx, db,
                               {"id": "bench", "params": params})
        job = summary["strategies"][STRATEGY]
        print(f"  -> v{job['version']} promoted={job['promoted']} "
              f"accuracy={job['metrics']['accuracy']:.4f} usable rows={job['usable_rows']:,}")
        print("stages on their own:")
        p = TrainingParams.from_mapping(params)
        window = LabelWindow(p.horizon_s, p.max_bar_lag_s)
        with db.transaction() as conn:
            stages.timed("dataset_sizes (msd-ctl status)", dataset_sizes, conn, window)
        dataset, counts = stages.timed("dataset (query + features)", build, db, p)
        realised = stages.timed("realised PnL (FIFO)", realised_figures, db, STRATEGY,
                                lambda: None)
        candidate = stages.timed("fit + evaluation (walk-forward)", fit_and_evaluate, dataset, p)
        plan = batch_publication(STRATEGY, candidate, dataset, None, IncumbentScore(), realised,
                                 counts.as_dict(), p, "bench", None)
        stages.timed("version write (artifact + rows)", publish_version, db, plan)
        sklearn_comparison(dataset, candidate)
        db.close()
    finally:
        drop_database(dsn)
        shutil.rmtree(models_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
