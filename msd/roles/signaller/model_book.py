"""The signaller's view of the active model versions and paused strategies: loaded, verified,
switched at once.

`reload` reads which version is active per strategy (msd.model_versions) and which strategies
are paused, and loads what changed. A version whose artifact fails its hash, feature-version,
format or label-definition check is refused and reported, and the strategy warms up: it never
keeps serving the version it had loaded, which may be the one just retired as degraded. A
refused version is not loaded again until another version becomes active.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable, Mapping


from msd.learning.cadence import budget_start
from msd.learning.versions import LOAD_ERRORS, load_model
from msd.ml.calibration import CalibratedModel
from msd.ml.features import MissingFeature
from msd.ml.params import TrainingParams
from msd.store.db import Database
from msd.store.pauses import Pause, pauses, start_budget
from msd.store.versions import get_active
from msd.strategies.model_plan import ModelCall
from msd.strategies.step import call_model

log = logging.getLogger("msd.signaller")


@dataclass(frozen=True)
class LoadedModel:
    version: int
    model: CalibratedModel


class ModelBook:
    def __init__(self, db: Database, label_params: Callable[[], TrainingParams | None] = lambda: None):
        self.db = db
        self.label_params = label_params        # the configured label definition a version must match
        self.models: dict[str, LoadedModel] = {}
        self.refused: dict[str, str] = {}       # strategy -> why its active version is not served
        self.refused_versions: dict[str, int] = {}
        self.paused: dict[str, Pause] = {}

    def mode(self, strategy: str) -> str:
        if strategy in self.paused:
            return "paused"
        return "model" if strategy in self.models else "warmup"

    def version(self, strategy: str) -> int | None:
        loaded = self.models.get(strategy)
        return loaded.version if loaded else None

    def versions(self) -> dict[str, int]:
        return {sid: loaded.version for sid, loaded in self.models.items()}

    def considered(self) -> dict[str, int]:
        """The active versions this book has acted on: served, or refused (then warm-up)."""
        return {**self.refused_versions, **self.versions()}

    def reload(self, strategies: Iterable[str]) -> dict[str, tuple[int | None, int | None]]:
        """Load what changed; returns {strategy: (old version, new version)} for the changes."""
        wanted = list(strategies)
        with self.db.transaction() as conn:
            active = {sid: get_active(conn, sid) for sid in wanted}
            paused = pauses(conn)
        self.paused = {sid: p for sid, p in paused.items() if sid in active}
        changes = {}
        for sid, info in active.items():
            old = self.version(sid)
            if info is None:
                self.models.pop(sid, None)
                self.refused.pop(sid, None)
                self.refused_versions.pop(sid, None)
            elif info.version != old and self.refused_versions.get(sid) != info.version:
                self._load(sid, info)
            if self.version(sid) != old:
                changes[sid] = (old, self.version(sid))
        return changes

    def drop(self, strategy: str, why: str) -> None:
        """Stop serving the strategy's model at once (warm-up serves) until the next reload."""
        dropped = self.models.pop(strategy, None)
        if dropped is not None:
            self.refused[strategy] = why
            self.refused_versions[strategy] = dropped.version

    def _load(self, strategy: str, info) -> None:
        try:
            self.models[strategy] = LoadedModel(info.version, load_model(info, self.label_params()))
            self.refused.pop(strategy, None)
            self.refused_versions.pop(strategy, None)
        except LOAD_ERRORS as exc:
            # The version we had is no longer the active one (it may have been retired as
            # degraded): warm-up is the only safe thing to serve.
            dropped = self.models.pop(strategy, None)
            self.refused[strategy] = f"v{info.version} refused: {exc}"
            self.refused_versions[strategy] = info.version
            log.error("strategy %s: active model v%s refused, %swarm-up serves: %s", strategy,
                      info.version, f"v{dropped.version} dropped, " if dropped else "", exc)

    def call(self, strategy: str, wire_snapshot: Mapping, now: datetime) -> ModelCall | MissingFeature:
        loaded = self.models[strategy]
        return call_model(loaded.model, loaded.version, wire_snapshot, now)


def sync_modes(db: Database, book: ModelBook, strategies, warmup_parameters, now: datetime) -> None:
    """Audit each strategy's mode as served now: a row when the mode, the model version or the
    warm-up parameters in force changed since the last row (activations, rollbacks, pauses and
    resumes written by the trainer, the learning loop or msd-ctl are already rows, so they are
    not repeated). A strategy entering warm-up from another mode starts a new warm-up budget;
    one seen in warm-up for the first time gets its first budget, starting at `now` (the role's clock)."""
    from msd.store.modes import latest_modes, record_transition
    with db.transaction() as conn:
        previous = latest_modes(conn)
        for params in strategies:
            before, mode, version = previous.get(params.id), book.mode(params.id), book.version(params.id)
            budget = budget_start(before.mode if before else None, mode)     # the backtest's rule too
            if budget is not None:
                start_budget(conn, params.id, budget.reason, now=now, only_if_missing=not budget.restart)
            in_force = {"model_version": version} if mode == "model" else warmup_parameters(params)
            if before is not None and before.mode == mode and (
                    before.model_version == version if mode == "model" else before.parameters == in_force
                    or mode == "paused"):
                continue
            reason = _mode_reason(book, params.id, mode, before)
            record_transition(conn, params.id, before.mode if before else None, mode, reason, in_force, version)
            log.info("strategy %s in %s mode (%s)", params.id,
                     {"warmup": "warm-up", "paused": "paused"}.get(mode, f"model v{version}"),
                     reason, extra={"strategy": params.id, "parameters": str(in_force)})


def _mode_reason(book: ModelBook, sid: str, mode: str, before) -> str:
    if mode == "model":
        return f"serving active model v{book.version(sid)}"
    if mode == "paused":
        return f"paused ({book.paused[sid].cause}): {book.paused[sid].reason}"
    if sid in book.refused:
        return book.refused[sid]
    if before is not None and before.mode == "warmup":
        # Only a row the signaller wrote itself holds warm-up parameters; a deactivation or a
        # resume row holds its own evidence, so nothing "changed": the parameters are restated.
        if before.event in (None, "mode_change"):
            return "warm-up parameters changed"
        return f"warm-up parameters in force after the {before.event}"
    return "no active model"
