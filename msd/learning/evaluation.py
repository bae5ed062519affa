"""`msd-ctl compare`: two versions rescored on one window of decisions.

Stored figures come from each version's own validation window; subtracting them compares two
different periods (a defect of the first version of this command). Here both models are loaded
as the signaller would load them and scored by the same metrics on the same decisions: the
validation window of one of them, rebuilt from the store with today's cost settings. A window
that overlaps either version's training span (decisions it learned) is refused.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np

from msd.errors import MsdError
from msd.learning.job import build_strategy_dataset
from msd.learning.promotion import learned_until
from msd.learning.versions import load_model
from msd.ml.params import TrainingParams
from msd.ml.training import flatten_metrics, score
from msd.store.db import Database
from msd.store.versions import VersionError, get_version


def rescore_versions(db: Database, params: TrainingParams, strategy: str, a: int, b: int,
                     on: int) -> dict[str, Any]:
    infos = {}
    with db.transaction() as conn:
        for number in {a, b, on}:
            infos[number] = get_version(conn, strategy, number)
            if infos[number] is None:
                raise VersionError(f"version: v{number} of {strategy!r} does not exist")
    window = infos[on]
    if window.validation_from is None or window.validation_to is None:
        raise VersionError(f"v{on} of {strategy!r} records no validation window to score on")
    for number in (a, b):
        # A version scored on decisions it learned is scored in-sample (review finding 8).
        until = learned_until(infos[number])
        if until is not None and window.validation_from < until:
            raise VersionError(
                f"v{on}'s validation window {window.validation_from.isoformat()} .. "
                f"{window.validation_to.isoformat()} overlaps v{number}'s training (it learned "
                f"decisions up to {until.isoformat()}); scored there v{number} would be judged on "
                f"its own training data. Compare on the newer version's window (--on "
                f"{max(a, b)}), which neither learned")
    models = {}
    for number in (a, b):
        try:
            models[number] = load_model(infos[number], params)
        except (MsdError, OSError, ValueError) as exc:
            raise VersionError(f"v{number} cannot be rescored ({exc}); stored figures come from "
                               "different windows and are not compared") from None
    dataset, _ = build_strategy_dataset(db, strategy, params, since=window.validation_from,
                                        until=window.validation_to + timedelta(microseconds=1))
    if dataset.n == 0:
        raise VersionError(f"v{on}'s validation window {window.validation_from.isoformat()} .. "
                           f"{window.validation_to.isoformat()} holds no labelled decision now")
    rows = np.arange(dataset.n)
    figures = {number: flatten_metrics(score(models[number], dataset, rows, params))
               for number in (a, b)}
    return {"strategy_id": strategy,
            "window": {"of_version": on, "from": window.validation_from.isoformat(),
                       "to": window.validation_to.isoformat(), "decisions": dataset.n,
                       "cost_floor_pct": params.round_trip_fee_pct},
            "a": {"version": a, "metrics": figures[a], "is_active": infos[a].is_active,
                  "retired": infos[a].retired_at is not None},
            "b": {"version": b, "metrics": figures[b], "is_active": infos[b].is_active,
                  "retired": infos[b].retired_at is not None},
            "difference": {name: figures[b][name] - figures[a][name]
                           for name in sorted(set(figures[a]) & set(figures[b]))}}


