"""The signaller's view of the active model versions and paused strategies: loaded, verified,
switched at once.

`reload` reads which version is active per strategy (msd.model_versions) and which strategies
are paused, and loads what changed. A version whose artifact fails its hash, feature-version or
format check is refused and reported; the strategy then keeps the version it had loaded, or
warm-up if it had none.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Mapping

import numpy as np

from msd.errors import MsdError
from msd.learning.versions import load_model
from msd.ml.calibration import CalibratedModel
from msd.ml.features import BUY, NEITHER, SELL, MissingFeature
from msd.store.db import Database
from msd.store.pauses import Pause, pauses, start_budget
from msd.store.versions import get_active
from msd.strategies.model_plan import ModelCall, model_features

log = logging.getLogger("msd.signaller")


@dataclass(frozen=True)
class LoadedModel:
    version: int
    model: CalibratedModel


class ModelBook:
    def __init__(self, db: Database):
        self.db = db
        self.models: dict[str, LoadedModel] = {}
        self.refused: dict[str, str] = {}       # strategy -> why its active version is not served
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
            elif info.version != old:
                self._load(sid, info)
            if self.version(sid) != old:
                changes[sid] = (old, self.version(sid))
        return changes

    def _load(self, strategy: str, info) -> None:
        try:
            self.models[strategy] = LoadedModel(info.version, load_model(info))
            self.refused.pop(strategy, None)
        except (MsdError, OSError, ValueError, KeyError) as exc:
            self.refused[strategy] = f"v{info.version} refused: {exc}"
            log.error("strategy %s: active model v%s refused, keeping %s: %s", strategy, info.version,
                      f"v{self.version(strategy)}" if strategy in self.models else "warm-up", exc)

    def call(self, strategy: str, wire_snapshot: Mapping, now: datetime) -> ModelCall | MissingFeature:
        loaded = self.models[strategy]
        features = model_features(wire_snapshot, now)
        if isinstance(features, MissingFeature):
            return features
        proba = loaded.model.predict_proba(np.asarray(features, dtype=np.float64).reshape(1, -1))[0]
        return ModelCall(loaded.version, float(proba[BUY]), float(proba[SELL]), float(proba[NEITHER]))


def sync_modes(db: Database, book: ModelBook, strategies, warmup_parameters) -> None:
    """Audit each strategy's mode as served now: a row when the mode, the model version or the
    warm-up parameters in force changed since the last row (activations, rollbacks, pauses and
    resumes written by the trainer, the learning loop or msd-ctl are already rows, so they are
    not repeated). A strategy entering warm-up from another mode starts a new warm-up budget;
    one seen in warm-up for the first time gets its first budget."""
    from msd.store.modes import latest_modes, record_transition
    with db.transaction() as conn:
        previous = latest_modes(conn)
        for params in strategies:
            before, mode, version = previous.get(params.id), book.mode(params.id), book.version(params.id)
            if mode == "warmup":
                restart = before is not None and before.mode == "model"
                start_budget(conn, params.id, "back in warm-up" if restart else "first warm-up",
                             only_if_missing=not restart)
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
        return "warm-up parameters changed"
    return "no active model"
