"""Regressions of the hostile review of the learning lifecycle (issue 9 follow-up) that need the
real database: fall-back to an unloadable version, the warm-up budget after a fall-back, false
audit rows, label definitions checked at load, the batch gate's incumbent, compare windows."""
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from msd.errors import MsdError
from msd.learning.versions import fallback_version, load_model
from msd.ml.params import TrainingParams
from msd.roles.signaller.learning_loop import LearningLoop
from msd.roles.signaller.model_book import ModelBook, sync_modes
from msd.store.artifacts import MODEL_FILE
from msd.store.modes import latest_modes
from msd.store.pauses import budget_starts, start_budget
from msd.store.versions import activate, deactivate, get_active, get_version, list_versions
from tests import learning_data
from tests.integration.test_learning import STRATEGY, seed, train
from tests.learning_data import START

NOW = START + timedelta(days=30)        # the callers' clock (the learning loop's `now`)

pytestmark = pytest.mark.integration


def two_versions(db, tmp_path):
    """v1 and v2 of STRATEGY, both promoted; v2 active."""
    seed(db, strength=4.0, seed=1)
    assert train(db, tmp_path)["promoted"]
    seed(db, n=400, strength=4.0, seed=5, start=START + timedelta(days=3))
    train(db, tmp_path, min_margin_over_active=0.0, min_accuracy=0.5)
    with db.transaction() as conn:
        if get_active(conn, STRATEGY).version != 2:
            activate(conn, STRATEGY, 2, reason="test", now=NOW, evidence={})


def params(tmp_path, **overrides) -> TrainingParams:
    return TrainingParams.from_mapping(learning_data.params(models_dir=str(tmp_path), **overrides))


def degrade(db, book, tmp_path):
    """What the learning loop does when the served version's live quality degrades."""
    ctx = SimpleNamespace(config=SimpleNamespace(trainer=SimpleNamespace(training=params(tmp_path))))
    LearningLoop.fall_back(SimpleNamespace(ctx=ctx, db=db, book=book), STRATEGY, "live accuracy 0.41", NOW)


def test_retired_version_keeps_trading_when_the_fall_back_cannot_be_loaded(db, tmp_path):
    """Review finding 1: v2 degraded, last_good() returned v1 whose artifact no longer loads, the
    rollback activated it, the book refused it and kept serving the retired v2."""
    two_versions(db, tmp_path)
    book = ModelBook(db, lambda: params(tmp_path))
    book.reload([STRATEGY])
    assert book.version(STRATEGY) == 2
    with db.transaction() as conn:
        v1 = get_version(conn, STRATEGY, 1)
    Path(v1.path, MODEL_FILE).write_bytes(b"not the trained model")     # v1 cannot load any more
    degrade(db, book, tmp_path)
    assert book.version(STRATEGY) is None and book.mode(STRATEGY) == "warmup"
    with db.transaction() as conn:
        assert get_active(conn, STRATEGY) is None                        # deactivated, not rolled back
        assert get_version(conn, STRATEGY, 2).retired_at is not None
        assert fallback_version(conn, STRATEGY, params(tmp_path))[0] is None


def test_fall_back_skips_a_version_of_another_label_definition(db, tmp_path):
    """Review findings 1 and 11: a fall-back (and any load) of a version trained for another
    horizon or cost floor is refused; a version that loads is chosen instead."""
    two_versions(db, tmp_path)
    with db.transaction() as conn:
        info = get_version(conn, STRATEGY, 1)
    assert load_model(info, params(tmp_path)) is not None
    with pytest.raises(MsdError, match="label definition differs: horizon_s"):
        load_model(info, params(tmp_path, horizon_s=600.0))
    with pytest.raises(MsdError, match="round_trip_fee_pct"):
        load_model(info, params(tmp_path, round_trip_fee_pct=0.11))
    with db.transaction() as conn:
        target, passed = fallback_version(conn, STRATEGY, params(tmp_path), skip=2)
        assert target.version == 1 and passed == []
        target, passed = fallback_version(conn, STRATEGY, params(tmp_path, horizon_s=600.0), skip=2)
        assert target is None and "label definition differs" in passed[0]


def test_book_refuses_an_active_version_of_another_label_definition(db, tmp_path):
    """Review finding 11: the signaller served a version trained for another horizon."""
    two_versions(db, tmp_path)
    book = ModelBook(db, lambda: params(tmp_path, horizon_s=600.0))
    book.reload([STRATEGY])
    assert book.mode(STRATEGY) == "warmup" and "label definition differs" in book.refused[STRATEGY]
    assert book.considered() == {STRATEGY: 2}
    assert book.reload([STRATEGY]) == {}                                 # not reloaded every check


def test_fall_back_to_warmup_restarts_the_warmup_budget(db, tmp_path):
    """Review finding 5: deactivation after degradation kept the old (spent) warm-up budget, so
    the strategy was paused at once with a false ALERT."""
    two_versions(db, tmp_path)
    with db.transaction() as conn, conn.cursor() as cur:
        start_budget(conn, STRATEGY, "first warm-up", now=NOW - timedelta(days=30))
    with db.transaction() as conn:
        deactivate(conn, STRATEGY, reason="v2 degraded", now=NOW, evidence={"live": "0.41"})
    with db.transaction() as conn, conn.cursor() as cur:
        new = budget_starts(conn)[STRATEGY]
        cur.execute("SELECT reason FROM msd.warmup_budgets")
        assert new == NOW and cur.fetchone()[0].startswith("back in warm-up")


def test_no_false_warmup_parameters_changed_row_after_deactivation_or_resume(db, tmp_path):
    """Review finding 12: sync_modes compared the deactivation row's evidence with the warm-up
    parameters and wrote "warm-up parameters changed"."""
    two_versions(db, tmp_path)
    with db.transaction() as conn:
        deactivate(conn, STRATEGY, reason="v2 degraded", now=NOW, evidence={"live": "0.41"})
    book = ModelBook(db, lambda: params(tmp_path))
    book.reload([STRATEGY])
    strategy = SimpleNamespace(id=STRATEGY)
    sync_modes(db, book, [strategy], lambda p: {"heuristic": "momentum"}, NOW)
    sync_modes(db, book, [strategy], lambda p: {"heuristic": "momentum"}, NOW)    # nothing new
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("SELECT reason FROM msd.mode_transitions WHERE strategy_id = %s AND event IS NULL "
                    "AND to_mode = 'warmup' ORDER BY id", (STRATEGY,))
        reasons = [r for (r,) in cur.fetchall()]
        assert reasons == ["warm-up parameters in force after the deactivation"]
        assert latest_modes(conn)[STRATEGY].parameters == {"heuristic": "momentum"}
    sync_modes(db, book, [strategy], lambda p: {"heuristic": "random"}, NOW)      # a real change
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("SELECT reason FROM msd.mode_transitions ORDER BY id DESC LIMIT 1")
        assert cur.fetchone()[0] == "warm-up parameters changed"


def test_only_filled_decisions_became_training_rows(db, tmp_path):
    """Review finding 3: the dataset joined on `fills > 0`, so which decisions became rows
    depended on limit-order fills, which depend on the side and the path after the decision.
    Every recorded decision is now a row; fills only give the fill rate (and cost and PnL)."""
    from msd.learning.job import build_strategy_dataset
    data = learning_data.synthetic(400, strength=4.0, seed=11)
    # fills as a passive limit order gets them: a buy fills when the price then falls, a sell
    # when it rises, i.e. only decisions whose side did NOT pay
    paid = [(side == "buy") == (move > 0) for side, move in zip(data.sides, data.returns)]
    executions = [e for e, p in zip(data.executions, paid) if not p]
    with db.transaction() as conn:
        learning_data.copy_rows(conn, "msd.signals", learning_data.SIGNAL_COLUMNS, data.signals)
        learning_data.copy_rows(conn, "msd.executions", learning_data.EXECUTION_COLUMNS, executions)
        learning_data.copy_rows(conn, "msd.market_bars", learning_data.BAR_COLUMNS, data.bars)
    dataset, counts = build_strategy_dataset(db, STRATEGY, params(tmp_path))
    assert dataset.n == 400 and counts.signals == 400 and counts.filled == len(executions)
    assert counts.as_dict()["fill_rate"] == round(len(executions) / 400, 4)
    summary = train(db, tmp_path)
    assert summary["dataset"]["fill_rate"] == counts.fill_rate and summary["usable_rows"] == 400


def test_warmup_budget_reads_overdue_unlabelled_and_unfilled_calls(db):
    """Review finding 6 (store side): the budget read only labelled, filled calls."""
    from msd.store.datasets import LabelWindow, warmup_budget_decisions
    data = learning_data.synthetic(6, strength=4.0, seed=12)
    with db.transaction() as conn:
        learning_data.copy_rows(conn, "msd.signals", learning_data.SIGNAL_COLUMNS, data.signals)
        learning_data.copy_rows(conn, "msd.executions", learning_data.EXECUTION_COLUMNS, data.executions[1:])
        learning_data.copy_rows(conn, "msd.market_bars", learning_data.BAR_COLUMNS, data.bars[:4])
        window = LabelWindow(learning_data.HORIZON_S, 120.0)
        ready, overdue = warmup_budget_decisions(conn, STRATEGY, window, since=START)
    assert [d.fills for d in ready] == [0, 1, 1, 1] and ready[1].filled_notional > 0
    assert len(overdue) == 2 and all(d.horizon_close is None and d.fills == 1 for d in overdue)


def _candidate_against_v1(db, tmp_path):
    """A batch candidate scored while v1 was active (what the job holds before publishing)."""
    from msd.learning.job import build_strategy_dataset
    from msd.learning.promotion import batch_publication, score_active
    from msd.ml.training import fit_and_evaluate
    seed(db, strength=4.0, seed=1)
    assert train(db, tmp_path)["promoted"]
    seed(db, n=400, strength=4.0, seed=5, start=START + timedelta(days=3))
    p = params(tmp_path)
    dataset, _ = build_strategy_dataset(db, STRATEGY, p)
    candidate = fit_and_evaluate(dataset, p)
    with db.transaction() as conn:
        v1 = get_active(conn, STRATEGY)
    return batch_publication(STRATEGY, candidate, dataset, v1, score_active(v1, dataset, candidate, p),
                             {}, {}, p, "r", None)


def test_batch_gate_compared_against_an_incumbent_that_was_no_longer_active(db, tmp_path):
    """Review finding 7: the job read the active version once at its start; publish_version did
    not check it again under the lock, so a candidate was gated against a replaced incumbent."""
    from msd.learning.promotion import StaleIncumbent, publish_version
    pub = _candidate_against_v1(db, tmp_path)
    assert pub.active.version == 1 and pub.active_metrics is not None
    with db.transaction() as conn:
        deactivate(conn, STRATEGY, reason="v1 degraded", now=NOW)       # meanwhile: no active version
    online_like = pub.__class__(**{**pub.__dict__, "rescore": None})
    with pytest.raises(StaleIncumbent, match="changed from v1 to none"):
        publish_version(db, online_like)
    with db.transaction() as conn:
        assert [v.version for v in list_versions(conn, STRATEGY)] == [1]      # nothing written
    summary = publish_version(db, pub)                        # batch: re-gated on what is active
    assert summary["version"] == 2 and not any(k.startswith("active.") for k in summary["metrics"])
    assert not any("active version" in reason for reason in summary["gate_reasons"])


def test_online_promoted_incumbent_was_rescored_on_rows_it_learned(db, tmp_path):
    """Review finding 7: an online-promoted incumbent had learned recent decisions and was
    rescored on them (in-sample) when a batch candidate was judged."""
    pub = _candidate_against_v1(db, tmp_path)
    n_val = pub.validation.n
    from msd.learning.job import build_strategy_dataset
    from msd.learning.promotion import score_active
    from msd.ml.training import fit_and_evaluate
    p = params(tmp_path)
    dataset, _ = build_strategy_dataset(db, STRATEGY, p)
    candidate = fit_and_evaluate(dataset, p)
    val_times = dataset.timestamps[candidate.val_idx]
    learned = float(val_times[len(val_times) // 3])            # v1 "learned" the first third
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("UPDATE msd.model_versions SET metrics = metrics || jsonb_build_object("
                    "'source', 'online', 'learned_until', to_timestamp(%s)::text) WHERE version = 1",
                    (learned,))
        v1 = get_active(conn, STRATEGY)
    score = score_active(v1, dataset, candidate, p)
    unseen = int((val_times >= learned).sum())
    assert score.metrics.n == score.candidate.n == unseen < n_val
    score = score_active(v1, dataset, candidate, params(tmp_path, min_samples=unseen + 1))
    assert score.metrics is None and score.blocking and "never saw" in score.note
