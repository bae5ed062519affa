"""The online challenger of a model-mode strategy (FR-004, DESIGN §6).

Warm-started from the active version, it learns every labelled decision of the strategy as
the outcome arrives (late labels included, up to `lookback_s` after the decision), each one
first predicted by it and by the incumbent and kept in a prequential record. Its figures on
that record use the same outcome function, metrics and gate as batch training: the first part
of the record fits its calibration, the rest is scored for both contenders and the naive rule;
it becomes a new audited version when the gate passes, i.e. when it beats the active version
by the promotion margin on the same decisions. Pure apart from `state_arrays` / `restore`,
which the role hands to the store.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from msd.learning.outcomes import Labelled
from msd.ml.calibration import CalibratedModel, PlattScaling
from msd.ml.evaluation import Metrics, metrics
from msd.ml.gate import GateDecision, promotion_decision
from msd.ml.models import Naive, OnlineConfig, OnlineLogistic
from msd.ml.params import OnlineParams, TrainingParams
from msd.ml.prequential import PrequentialRecord
from msd.ml.training import MIN_CALIBRATION_ROWS

CONTENDERS = ("challenger", "incumbent")


@dataclass(frozen=True)
class ChallengerVerdict:
    """The gate's answer for the challenger on the scored part of its record."""
    decision: GateDecision
    challenger: Metrics
    incumbent: Metrics
    baselines: Mapping[str, Metrics]
    model: CalibratedModel
    scored_from: float                  # epoch seconds of the first scored decision
    scored_to: float
    calibration_rows: int


@dataclass
class Challenger:
    strategy: str
    base_version: int
    learner: OnlineLogistic
    record: PrequentialRecord
    learned: dict[str, float] = field(default_factory=dict)   # signal_id -> decided_at
    seen: int = 0
    last_verdict: str | None = None

    @classmethod
    def warm_start(cls, strategy: str, version: int, active: CalibratedModel,
                   params: OnlineParams) -> "Challenger":
        base = active.base
        config = OnlineConfig(l2=params.l2, learning_rate=params.learning_rate, batch_size=1)
        learner = (OnlineLogistic.warm_started(base, config) if hasattr(base, "classes")
                   else copy.deepcopy(base))
        return cls(strategy, version, learner, PrequentialRecord(params.window, CONTENDERS))

    def learn(self, row: Labelled, x: np.ndarray, incumbent: CalibratedModel) -> bool:
        """Predict (both contenders), then learn; False when the decision was learned before."""
        decision = row.decision
        if decision.signal_id in self.learned:
            return False
        vector = np.asarray(x, dtype=np.float64).reshape(1, -1)
        self.record.add(row.label, row.move, row.cost, decision.decided_at.timestamp(), x,
                        {"challenger": self.learner.predict_proba(vector)[0],
                         "incumbent": incumbent.predict_proba(vector)[0]})
        self.learner.learn_one(x, row.label)
        self.learned[decision.signal_id] = decision.decided_at.timestamp()
        self.seen += 1
        return True

    def forget_before(self, cutoff: float) -> None:
        """Drop ids of decisions older than `cutoff` (their labels can no longer arrive)."""
        self.learned = {sid: at for sid, at in self.learned.items() if at >= cutoff}

    def verdict(self, params: TrainingParams) -> ChallengerVerdict | None:
        """The gate on the record, or None until the scored part can reach min_samples."""
        n = len(self.record)
        calibration_rows = int(round(n * params.calibration_fraction))
        if n - calibration_rows < params.min_samples:
            return None
        head, scored = self.record.arrays(0, calibration_rows), self.record.arrays(calibration_rows)
        scaling = PlattScaling()
        if calibration_rows >= MIN_CALIBRATION_ROWS:
            scaling.fit(head["challenger"], head["y"])
        common = {"threshold": params.confidence_threshold, "moves": scored["moves"],
                  "costs": scored["costs"]}
        challenger = metrics(scored["y"], scaling.apply(scored["challenger"]), **common)
        incumbent = metrics(scored["y"], scored["incumbent"], **common)
        baselines = {}
        if calibration_rows and np.unique(head["y"]).size:
            naive = Naive().fit(head["X"], head["y"])
            baselines["naive"] = metrics(scored["y"], naive.predict_proba(scored["X"]), **common)
        decision = promotion_decision(challenger, baselines, incumbent, challenger.n,
                                      params.gate())
        model = CalibratedModel(copy.deepcopy(self.learner), scaling, params.calibration_fraction)
        self.last_verdict = "; ".join(decision.reasons)
        return ChallengerVerdict(decision, challenger, incumbent, baselines, model,
                       float(scored["decided_at"][0]), float(scored["decided_at"][-1]),
                       calibration_rows)

    def view(self) -> dict[str, Any]:
        return {"from_version": self.base_version, "learned": self.seen,
                "record": len(self.record), "last_verdict": self.last_verdict}

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"learner.{k}": v for k, v in self.learner.to_arrays().items()}
        arrays.update(self.record.to_arrays())
        return arrays

    def state_meta(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "base_version": self.base_version,
                "learned": self.learned, "seen": self.seen}

    @classmethod
    def restore(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                params: OnlineParams) -> "Challenger":
        learner = OnlineLogistic.from_arrays({k[8:]: v for k, v in arrays.items()
                                              if k.startswith("learner.")})
        record = PrequentialRecord(params.window, CONTENDERS)
        if "record.y" in arrays and len(arrays["record.y"]):
            record.restore(arrays)
        return cls(str(meta["strategy"]), int(meta["base_version"]), learner, record,
                   {str(k): float(v) for k, v in dict(meta.get("learned", {})).items()},
                   int(meta.get("seen", 0)))
