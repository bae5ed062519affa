"""The daemon's learning loop and the backtest's learner decide alike (issue 12): one sequence of
gathered inputs (labelled counts, labelled calls, warm-up losses) goes to both, and both ask
for the same trainings, fall back to the same version and pause the same strategy.

The daemon side is the real LearningLoop on a real database (v1 and v2 trained and promoted,
v2 served), its main-loop half fed what its worker would have read; its requests are read
from its RoleContext pipe, its fall-back and pause from the database and its model book. The
backtest side is msd.backtest.learner.StrategyLearning fed the same rows in memory."""
import multiprocessing
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import yaml

from msd.backtest.learner import Quality, StrategyLearning, Version
from msd.config import load_config
from msd.learning.monitoring import warmup_spend
from msd.learning.outcomes import Decision, Labelled
from msd.ml.features import BUY, SELL
from msd.roles.runtime.process import RoleContext
from msd.roles.signaller.learning_loop import Gathered, LearningLoop
from msd.roles.signaller.model_book import ModelBook
from msd.store.pauses import pauses
from msd.store.versions import active_versions, get_version, latest_retirements, latest_training_outcomes
from msd.supervisor.spawn import ChildSpec
from msd.values.parsing import aware_time
from tests import learning_data
from tests.integration.daemon import base_config
from tests.integration.test_learning import STRATEGY
from tests.integration.test_learning_review_fixes import two_versions

pytestmark = pytest.mark.integration
WARMING = "warming_v1"
THRESHOLD, WINDOW, BUDGET, LOSS_PER_CALL = 100, 50, Decimal(1), 50 * 0.012


def config(tmp_path, dsn):
    def strategy(sid):
        return {"id": sid, "assets": ["BTCUSDT"], "rate": {"rate_per_s": 1, "burst": 1},
                "warmup": {"frequency_s": 1, "min_amount_usdt": 10, "max_amount_usdt": 20, "max_exposure_usdt": 1000,
                           "budget_usdt": str(BUDGET), "max_duration_s": 86400}}
    raw = base_config(tmp_path, dsn, "amqp://guest:guest@127.0.0.1:5672/unused",
                      signaller={"strategies": [strategy(STRATEGY), strategy(WARMING)]},
                      trainer={"data_threshold": THRESHOLD, "schedule": None,
                               "quality": {"threshold": 0.6, "hysteresis": 0.05, "min_samples": 5, "window": WINDOW},
                               "online": {"enabled": False},
                               "training": learning_data.params(models_dir=str(tmp_path))})
    path = tmp_path / "msd.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, env={"MSD_TEST_AMQP_PASSWORD": "guest"})


def calls(sid, mode, version, first, paid, missed):
    """Labelled buy calls one every 0.1 minute from `first`: `paid` that paid, then `missed`."""
    rows = []
    for i in range(paid + missed):
        decision = Decision(f"{sid}-{first.isoformat()}-{i}", sid, "BTCUSDT", "buy", first + timedelta(minutes=i / 10),
                            {"price": 100.0}, 50.0, mode, version and f"v{version}", 0.7, None, 1, 50.0)
        rows.append(Labelled(decision, 0.01 if i < paid else -0.01, 0.002, BUY if i < paid else SELL))
    return rows


def scenario(t):
    """Per check: (minute, labelled count of STRATEGY, its new labelled calls, WARMING's new ones)."""
    return [
        (0, 150, calls(STRATEGY, "model", 2, t - timedelta(minutes=10), 8, 2),
         calls(WARMING, "warmup", None, t - timedelta(minutes=5), 0, 1)),
        (1, 160, calls(STRATEGY, "model", 2, t + timedelta(seconds=6), 0, 10), []),
        (7, 170, calls(STRATEGY, "model", 1, t + timedelta(minutes=2), 8, 2),
         calls(WARMING, "warmup", None, t + timedelta(minutes=2), 0, 2)),
        (8, 5, [], []),
    ]


class Daemon:
    """The daemon's half: LearningLoop._apply on what its worker would have read."""

    def __init__(self, db, cfg):
        self.db, self.cfg = db, cfg
        self.pipe, theirs = multiprocessing.Pipe()
        self.ctx = RoleContext(ChildSpec("signaller", "msd.roles.signaller.main", cfg, theirs, {}))
        self.book = ModelBook(db, lambda: cfg.trainer.training)
        self.book.reload([STRATEGY, WARMING])
        self.loop = LearningLoop(self.ctx, db, self.book, lambda why: self.book.reload([STRATEGY, WARMING]))
        self.rows = {STRATEGY: [], WARMING: []}

    def check(self, now, count, model_rows, warmup_rows, budget_start):
        self.rows[STRATEGY] += model_rows
        self.rows[WARMING] += warmup_rows
        g = Gathered(dict(self.book.versions()), counts={STRATEGY: count, WARMING: 0})
        with self.db.transaction() as conn:
            g.last_training, g.retired = latest_training_outcomes(conn), latest_retirements(conn)
            g.db_versions, g.db_paused = active_versions(conn), set(pauses(conn))
            for sid, version in g.versions.items():
                since = get_version(conn, sid, version).activated_at
                tag = f"v{version}"
                g.quality[sid] = [r for r in self.rows[sid] if r.decision.model_version == tag
                                  and r.decision.decided_at >= since][-WINDOW:]
        if self.book.mode(WARMING) == "warmup":
            g.spend[WARMING] = warmup_spend(self.rows[WARMING], budget_start, now)
        self.loop._apply(self.cfg, g, now)
        return self.observed()

    def observed(self):
        seen = set()
        while self.pipe.poll():
            kind, data = self.pipe.recv()
            if kind == "event" and data["kind"] == "train_request":
                seen.add(("train", data["reason"].split(":")[0], data["strategy"]))
        seen.add(("serves", STRATEGY, self.book.version(STRATEGY)))
        seen |= {("paused", sid, p.cause) for sid, p in self.book.paused.items()}
        return seen


class Backtest:
    """The backtest's half: one StrategyLearning per strategy, v1 and v2 promoted, v2 served."""

    def __init__(self, cfg, last_training, budget_start):
        def learning(sid, warmup):
            q = cfg.trainer.quality
            one = StrategyLearning(sid, cfg.trainer.training, Quality(q.threshold, q.hysteresis, q.min_samples,
                                                                       q.window), warmup.budget_usdt,
                                   warmup.max_duration_s, warmup.unlabelled_loss_pct / 100.0, 60.0)
            one.last_attempt = last_training.get(sid)
            return one
        self.learning = {p.id: learning(p.id, p.warmup) for p in cfg.signaller.strategies}
        served = self.learning[STRATEGY]
        long_ago = budget_start - timedelta(days=1)
        served.versions = [Version(n, long_ago, long_ago + timedelta(minutes=n), (), {}, 0.0, 0) for n in (1, 2)]
        served.active, served.active_since = served.versions[1], long_ago + timedelta(minutes=2)
        self.learning[WARMING].budget_start = budget_start
        self.threshold = cfg.trainer.data_threshold

    def check(self, now, count, model_rows, warmup_rows):
        self.learning[STRATEGY].labelled += model_rows
        self.learning[WARMING].labelled += warmup_rows
        seen = set()
        for sid, learning in self.learning.items():
            for effect in learning.check(now, self.threshold, count if sid == STRATEGY else 0):
                if effect.__class__.__name__ == "RequestTraining":
                    seen.add(("train", effect.reason.split(":")[0], effect.strategy))
            if learning.paused:
                seen.add(("paused", sid, learning.paused.split(" ")[0]))
        active = self.learning[STRATEGY].active
        seen.add(("serves", STRATEGY, active.number if active else None))
        return seen


def test_daemon_and_backtest_ask_fall_back_and_pause_alike(db, fresh_pg_dsn, tmp_path):
    two_versions(db, tmp_path)
    cfg = config(tmp_path, fresh_pg_dsn)
    t = datetime.now(timezone.utc) + timedelta(minutes=1)
    budget_start = t - timedelta(minutes=30)
    with db.transaction() as conn:
        trained = {sid: aware_time("at", row["at"]) for sid, row in latest_training_outcomes(conn).items()}
    daemon, backtest = Daemon(db, cfg), Backtest(cfg, trained, budget_start)
    assert daemon.book.version(STRATEGY) == 2
    expected = [
        {("train", "data threshold", STRATEGY), ("serves", STRATEGY, 2)},
        {("train", "quality degradation", STRATEGY), ("serves", STRATEGY, 1)},
        {("train", "data threshold", STRATEGY), ("train", "quality degradation", STRATEGY),
         ("serves", STRATEGY, 1), ("paused", WARMING, "budget")},
        {("serves", STRATEGY, 1), ("paused", WARMING, "budget")},
    ]
    for (minute, count, model_rows, warmup_rows), wanted in zip(scenario(t), expected):
        now = t + timedelta(minutes=minute)
        live = daemon.check(now, count, model_rows, warmup_rows, budget_start)
        replayed = backtest.check(now, count, model_rows, warmup_rows)
        assert live == replayed == wanted, (minute, live, replayed)
