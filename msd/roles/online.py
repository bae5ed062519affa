"""The online learner of each model-mode strategy, updated prequentially (DESIGN.md §6).

Each newly labelled outcome of the strategy's model calls is first predicted, then learned
(`learn_one`), so the running accuracy is honest; the learner and its watermark are saved after
each update so a restart does not forget them. Its figures are reported next to the batch
model's in `msd-ctl status`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from msd.errors import MsdError
from msd.ml.dataset import Outcome, outcome_label
from msd.ml.features import FEATURE_NAMES, MissingFeature, features_from_snapshot
from msd.ml.models import OnlineLogistic
from msd.store.artifacts import load_online_state, save_online_state

log = logging.getLogger("msd.learning")


@dataclass
class OnlineRecord:
    learner: OnlineLogistic
    watermark: str | None = None        # decided_at (ISO) of the newest outcome learned
    seen: int = 0
    correct: int = 0

    def view(self) -> dict:
        return {"seen": self.seen, "accuracy": round(self.correct / self.seen, 4) if self.seen else None}


class OnlineTracker:
    def __init__(self, models_dir: str):
        self.models_dir = models_dir
        self.records: dict[str, OnlineRecord] = {}

    def record(self, strategy: str) -> OnlineRecord:
        if strategy not in self.records:
            self.records[strategy] = self._load(strategy)
        return self.records[strategy]

    def _load(self, strategy: str) -> OnlineRecord:
        try:
            saved = load_online_state(self.models_dir, strategy)
            if saved is not None:
                arrays, meta = saved
                return OnlineRecord(OnlineLogistic.from_arrays(arrays), meta.get("watermark"),
                                    int(meta.get("seen", 0)), int(meta.get("correct", 0)))
        except (OSError, ValueError, KeyError, MsdError) as exc:
            log.error("online learner of %s could not be restored, starting afresh: %s", strategy, exc)
        return OnlineRecord(OnlineLogistic(len(FEATURE_NAMES)))

    def update(self, strategy: str, outcomes: Sequence[Outcome], round_trip_fee: float) -> int:
        """Predict-then-learn every outcome newer than the watermark; returns how many were learned."""
        rec, learned = self.record(strategy), 0
        for outcome in outcomes:
            stamp = outcome.decided_at.isoformat()
            if rec.watermark is not None and stamp <= rec.watermark:
                continue
            rec.watermark = stamp
            x = features_from_snapshot(outcome.snapshot, {"decided_at": outcome.decided_at})
            if isinstance(x, MissingFeature) or abs(outcome.forward_return) <= round_trip_fee:
                continue
            label = outcome_label(outcome, round_trip_fee)
            rec.correct += int((rec.learner.predict_proba_one(x)[1] >= 0.5) == (label == 1))
            rec.learner.learn_one(x, label)
            rec.seen, learned = rec.seen + 1, learned + 1
        if learned:
            save_online_state(self.models_dir, strategy, rec.learner.to_arrays(),
                              {"watermark": rec.watermark, "seen": rec.seen, "correct": rec.correct,
                               "saved_at": datetime.now().astimezone().isoformat()})
        return learned
