"""The online challenger of a model-mode strategy (FR-004, DESIGN §6).

Warm-started from the active version, its learner learns every labelled decision of the
strategy (late labels included, up to `lookback_s` after the decision), each at the moment its
outcome became known: decided_at + horizon + bar lag (`overlap_s`).

It is scored prequentially for real (review finding 2). Decisions are replayed in decision-time
order behind a watermark (now - overlap_s, when every label up to then is in); before a
decision is predicted, the learner learns exactly the outcomes known by then (known_at earlier
than the decision), never a later one. What is scored and published is a **frozen copy** of the
learner (the candidate), taken once the learner has learned `window // 2` new outcomes:

    | block of `window` decisions after the freeze: calibration | embargo | scored |

The candidate predicts every decision of its block at decision time and learns none of them; the
first `calibration_fraction` fits its Platt scaling, the decisions after an embargo of
`overlap_s` are scored for the candidate, the incumbent and the naive rule by the same metrics
and gate as batch training. A pass is not enough: the same candidate (same scaling) must pass
again on the next, fresh block (a confirmation). Only then is it published, and the model
published is exactly the one scored on that block. Gate looks happen only at block ends, each on
decisions no earlier look saw, and a promotion needs two passes in a row, so looking often does
not turn noise into a promotion. Pure apart from `state_arrays` / `restore`, which the role
hands to the store.
"""
from __future__ import annotations

import bisect
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
_PENDING = ("decided_at", "known_at", "y", "moves", "costs")


@dataclass(frozen=True)
class ChallengerVerdict:
    """The gate's answer for a frozen candidate on the scored part of one block. `scored` holds
    that part's arrays (y, moves, costs, decided_at, X and each contender's prediction made at
    decision time); `learned_until`: every outcome the candidate learned was known before it."""
    decision: GateDecision
    challenger: Metrics
    incumbent: Metrics
    baselines: Mapping[str, Metrics]
    model: CalibratedModel
    scored_from: float                  # epoch seconds of the first scored decision
    scored_to: float
    calibration_rows: int
    learned_until: float
    confirmation: bool                  # True: the second, confirming block
    looks: int
    scored: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)


@dataclass
class _Row:
    signal_id: str
    decided_at: float
    known_at: float
    x: np.ndarray
    y: int
    move: float
    cost: float


@dataclass
class Challenger:
    strategy: str
    base_version: int
    learner: OnlineLogistic
    block: PrequentialRecord
    overlap_s: float
    window: int
    waiting: list[_Row] = field(default_factory=list)     # labelled, not yet replayed
    to_learn: list[_Row] = field(default_factory=list)    # replayed, outcome not yet known
    ids: dict[str, float] = field(default_factory=dict)   # signal_id -> decided_at (no twice)
    cursor: float = float("-inf")        # the replay's clock: decisions up to it are done
    seen: int = 0                        # outcomes learned
    scored: int = 0                      # decisions replayed (predicted at decision time)
    late: int = 0                        # labels that came after the replay passed them: learned only
    candidate: OnlineLogistic | None = None
    scaling: PlattScaling | None = None  # set while a passed candidate is being confirmed
    frozen_at: float = float("-inf")
    seen_at_freeze: int = 0
    looks: int = 0
    last_verdict: str | None = None

    @classmethod
    def warm_start(cls, strategy: str, version: int, active: CalibratedModel,
                   params: OnlineParams, overlap_s: float) -> "Challenger":
        base = active.base
        config = OnlineConfig(l2=params.l2, learning_rate=params.learning_rate, batch_size=1)
        learner = (OnlineLogistic.warm_started(base, config) if hasattr(base, "classes")
                   else copy.deepcopy(base))
        return cls(strategy, version, learner, PrequentialRecord(params.window, CONTENDERS),
                   float(overlap_s), params.window)

    # ----- input -----------------------------------------------------------------------
    def add(self, row: Labelled, x: np.ndarray) -> bool:
        """Take a labelled decision; False when it was taken before. One decided before the
        replay's clock came too late to be predicted at its time: it is only learned."""
        decision = row.decision
        if decision.signal_id in self.ids:
            return False
        at = decision.decided_at.timestamp()
        self.ids[decision.signal_id] = at
        item = _Row(decision.signal_id, at, at + self.overlap_s,
                    np.asarray(x, dtype=np.float64).ravel(), int(row.label), float(row.move),
                    float(row.cost))
        if at <= self.cursor:
            self.late += 1
            self._insort(self.to_learn, item, "known_at")
        else:
            self._insort(self.waiting, item, "decided_at")
        return True

    def forget_before(self, cutoff: float) -> None:
        """Drop ids of decisions older than `cutoff` (their labels can no longer arrive)."""
        self.ids = {sid: at for sid, at in self.ids.items() if at >= cutoff}

    # ----- the replay --------------------------------------------------------------------
    def advance(self, now: float, incumbent: CalibratedModel,
                params: TrainingParams) -> list[ChallengerVerdict]:
        """Replay the waiting decisions up to the watermark `now - overlap_s`; the verdicts of
        the blocks that ended, in order. Stops after a promoting verdict (to be published)."""
        watermark = now - self.overlap_s
        verdicts: list[ChallengerVerdict] = []
        while self.waiting and self.waiting[0].decided_at <= watermark:
            row = self.waiting.pop(0)
            self._learn_known_before(row.decided_at)
            self.cursor = row.decided_at
            self._predict(row, incumbent)
            self._insort(self.to_learn, row, "known_at")
            if len(self.block) >= self.window:
                verdicts.append(self._judge(params))
                if verdicts[-1].decision.promote:
                    return verdicts
        self.cursor = max(self.cursor, watermark)   # later arrivals before it are late
        self._learn_known_before(self.cursor)
        return verdicts

    def _learn_known_before(self, moment: float) -> None:
        while self.to_learn and self.to_learn[0].known_at < moment:
            row = self.to_learn.pop(0)
            self.learner.learn_one(row.x, row.y)
            self.seen += 1

    def _predict(self, row: _Row, incumbent: CalibratedModel) -> None:
        self.scored += 1
        if self.candidate is None and self.seen - self.seen_at_freeze >= max(1, self.window // 2):
            # Everything it learned was known before this decision, the first of its block.
            self.candidate, self.frozen_at, self.seen_at_freeze = (
                copy.deepcopy(self.learner), row.decided_at, self.seen)
        if self.candidate is None:
            return
        vector = row.x.reshape(1, -1)
        self.block.add(row.y, row.move, row.cost, row.decided_at, row.x,
                       {"challenger": self.candidate.predict_proba(vector)[0],
                        "incumbent": incumbent.predict_proba(vector)[0]})

    def _judge(self, params: TrainingParams) -> ChallengerVerdict:
        """The gate on the block that just ended; resets the block."""
        n = len(self.block)
        head_rows = int(round(n * params.calibration_fraction))
        head, tail = self.block.arrays(0, head_rows), self.block.arrays(head_rows)
        if head_rows:   # embargo: outcomes of the head overlap the next decisions'
            keep = tail["decided_at"] >= head["decided_at"][-1] + self.overlap_s
            tail = {key: value[keep] for key, value in tail.items()}
        confirmation = self.scaling is not None
        scaling = self.scaling if confirmation else PlattScaling()
        if not confirmation and head_rows >= MIN_CALIBRATION_ROWS:
            scaling.fit(head["challenger"], head["y"])
        model = CalibratedModel(copy.deepcopy(self.candidate), scaling,
                                params.calibration_fraction)
        verdict = self._verdict(params, head, tail, model, head_rows, confirmation)
        self.looks += 1
        passed = verdict.decision.promote
        self.block = PrequentialRecord(self.window, CONTENDERS)
        if passed and not confirmation:
            # A first pass: keep the very model (and scaling) for a fresh block.
            self.scaling = scaling
            verdict = _replace_decision(verdict, GateDecision(False, verdict.decision.reasons + (
                f"pending: passed look {self.looks}; the same candidate must pass again on a "
                "fresh block before it is published",)))
        else:
            self.scaling, self.candidate = None, None     # the next freeze is a new candidate
        self.last_verdict = "; ".join(r for r in verdict.decision.reasons
                                      if not r.startswith("pass:")) or "promoted"
        return verdict

    def _verdict(self, params: TrainingParams, head: dict, tail: dict, model: CalibratedModel,
                 head_rows: int, confirmation: bool) -> ChallengerVerdict:
        if tail["y"].size == 0:
            empty = _none_scored(params)
            return ChallengerVerdict(GateDecision(False, ("fail: no scored decisions after the embargo",)),
                           empty, empty, {}, model, self.frozen_at, self.frozen_at, head_rows,
                           self.frozen_at, confirmation, self.looks + 1, tail)
        common = {"threshold": params.confidence_threshold, "moves": tail["moves"],
                  "costs": tail["costs"], "decided_at": tail["decided_at"],
                  "overlap_s": self.overlap_s}
        challenger = metrics(tail["y"], model.scaling.apply(tail["challenger"]), **common)
        incumbent = metrics(tail["y"], tail["incumbent"], **common)
        baselines = {}
        if head_rows and np.unique(head["y"]).size:
            naive = Naive().fit(head["X"], head["y"])
            baselines["naive"] = metrics(tail["y"], naive.predict_proba(tail["X"]), **common)
        decision = promotion_decision(challenger, baselines, incumbent, challenger.n,
                                      params.gate())
        return ChallengerVerdict(decision, challenger, incumbent, baselines, model,
                       float(tail["decided_at"][0]), float(tail["decided_at"][-1]), head_rows,
                       self.frozen_at, confirmation, self.looks + 1, tail)

    # ----- views and state -----------------------------------------------------------------
    def view(self) -> dict[str, Any]:
        phase = ("confirming" if self.scaling is not None else
                 "scoring" if self.candidate is not None else "learning")
        return {"from_version": self.base_version, "learned": self.seen, "scored": self.scored,
                "late_labels": self.late, "phase": phase, "block": len(self.block),
                "looks": self.looks, "last_verdict": self.last_verdict}

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"learner.{k}": v for k, v in self.learner.to_arrays().items()}
        if self.candidate is not None:
            arrays.update({f"candidate.{k}": v for k, v in self.candidate.to_arrays().items()})
        if self.scaling is not None:
            arrays.update({f"scaling.{k}": v for k, v in self.scaling.to_arrays().items()})
        arrays.update(self.block.to_arrays())
        for name, rows in (("waiting", self.waiting), ("to_learn", self.to_learn)):
            arrays[f"{name}.X"] = (np.vstack([r.x for r in rows]) if rows
                                   else np.empty((0, self.learner.n_features)))
            for key, attr in zip(_PENDING, ("decided_at", "known_at", "y", "move", "cost")):
                arrays[f"{name}.{key}"] = np.asarray([getattr(r, attr) for r in rows],
                                                     dtype=np.float64)
        return arrays

    def state_meta(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "base_version": self.base_version,
                "overlap_s": self.overlap_s, "learned": self.ids, "seen": self.seen,
                "scored": self.scored, "late": self.late, "cursor": self.cursor,
                "frozen_at": self.frozen_at, "seen_at_freeze": self.seen_at_freeze,
                "looks": self.looks, "last_verdict": self.last_verdict,
                "waiting_ids": [r.signal_id for r in self.waiting],
                "to_learn_ids": [r.signal_id for r in self.to_learn]}

    @classmethod
    def restore(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                params: OnlineParams) -> "Challenger":
        """From `state_arrays` / `state_meta`; foreign or older states raise (KeyError,
        ValueError) and the caller starts afresh."""
        def part(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        learner = OnlineLogistic.from_arrays(part("learner."))
        block = PrequentialRecord(params.window, CONTENDERS)
        if "record.y" in arrays and len(arrays["record.y"]):
            block.restore(arrays)
        challenger = cls(str(meta["strategy"]), int(meta["base_version"]), learner, block,
                         float(meta["overlap_s"]), params.window,
                         ids={str(k): float(v) for k, v in dict(meta["learned"]).items()},
                         cursor=float(meta["cursor"]), seen=int(meta["seen"]),
                         scored=int(meta["scored"]), late=int(meta["late"]),
                         frozen_at=float(meta["frozen_at"]),
                         seen_at_freeze=int(meta["seen_at_freeze"]), looks=int(meta["looks"]),
                         last_verdict=meta.get("last_verdict"))
        if part("candidate."):
            challenger.candidate = OnlineLogistic.from_arrays(part("candidate."))
        if part("scaling."):
            challenger.scaling = PlattScaling.from_arrays(part("scaling."))
        for name in ("waiting", "to_learn"):
            ids = list(meta[f"{name}_ids"])
            values = {key: np.asarray(arrays[f"{name}.{key}"]) for key in _PENDING}
            X = np.asarray(arrays[f"{name}.X"])
            setattr(challenger, name, [
                _Row(ids[i], float(values["decided_at"][i]), float(values["known_at"][i]),
                     X[i].astype(np.float64), int(values["y"][i]), float(values["moves"][i]),
                     float(values["costs"][i])) for i in range(len(ids))])
        return challenger

    @staticmethod
    def _insort(rows: list[_Row], row: _Row, key: str) -> None:
        bisect.insort_right(rows, row, key=lambda r: getattr(r, key))


def _replace_decision(verdict: ChallengerVerdict, decision: GateDecision) -> ChallengerVerdict:
    return ChallengerVerdict(decision, *(getattr(verdict, name) for name in (
        "challenger", "incumbent", "baselines", "model", "scored_from", "scored_to",
        "calibration_rows", "learned_until", "confirmation", "looks", "scored")))


def _none_scored(params: TrainingParams) -> Metrics:
    """Metrics of an empty scored part (the gate refuses it anyway)."""
    return Metrics(n=0, threshold=params.confidence_threshold, accuracy=0.0, base_rate=0.0,
                   up_rate=0.0, down_rate=0.0, balanced_accuracy=0.0, coverage=0.0, n_calls=0,
                   precision=None, net_return_mean=None, net_return_lower=None,
                   net_return_upper=None, independent_calls=0, mean_confidence=None,
                   log_loss=0.0, brier=0.0, calibration_error=0.0)
