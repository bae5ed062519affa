"""Wiring of the online challengers (msd.learning.online): one per model-mode strategy,
warm-started from its active version, fed the strategy's labelled decisions, replayed up to
now - (horizon + bar lag), saved in `var/models/<strategy>/online/` after each update, and
published through msd.learning.promotion when a frozen candidate passed the gate on two fresh
blocks in a row."""
from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from msd.config import Config
from msd.errors import DatabaseUnavailable, MsdError
from msd.learning.dataset import features_of
from msd.learning.online import Challenger, ChallengerVerdict
from msd.learning.promotion import Publication, publish_version
from msd.ml.features import MissingFeature
from msd.roles.signaller.model_book import ModelBook
from msd.store.artifacts import load_online_state, save_online_state
from msd.store.versions import get_active

log = logging.getLogger("msd.learning")


class OnlineChallengers:
    def __init__(self, db: Any) -> None:
        self.db = db
        self.challengers: dict[str, Challenger] = {}
        self.promoted = False

    def update(self, config: Config, book: ModelBook, rows_by_sid: dict[str, list],
               now: datetime) -> None:
        online = config.trainer.online
        for sid in list(self.challengers):
            if sid not in book.models:
                del self.challengers[sid]
        if not online.enabled:
            return
        for sid, rows in rows_by_sid.items():
            loaded = book.models.get(sid)
            if loaded is None:
                continue
            challenger = self._challenger(config, sid, loaded)
            before = (challenger.seen, challenger.scored, len(challenger.ids))
            for row in rows:
                x = features_of(row.decision)
                if not isinstance(x, MissingFeature):
                    challenger.add(row, x)
            verdicts = challenger.advance(now.timestamp(), loaded.model, config.trainer.training)
            challenger.forget_before(now.timestamp() - online.lookback_s)
            if (challenger.seen, challenger.scored, len(challenger.ids)) != before or verdicts:
                self._save(config, challenger, now)
            for verdict in verdicts:
                log.info("strategy %s: online challenger look %d: %s", sid, verdict.looks,
                         challenger.last_verdict if verdict is verdicts[-1] else
                         "; ".join(verdict.decision.reasons), extra={"strategy": sid})
                if verdict.decision.promote:
                    self._publish(config, challenger, verdict, now)

    def _challenger(self, config: Config, sid: str, loaded) -> Challenger:
        current = self.challengers.get(sid)
        if current is not None and current.base_version == loaded.version:
            return current
        online, models_dir = config.trainer.online, config.trainer.training.models_dir
        try:
            saved = load_online_state(models_dir, sid)
            if saved is not None and int(saved[1].get("base_version", -1)) == loaded.version:
                self.challengers[sid] = Challenger.restore(*saved, online)
                return self.challengers[sid]
        except (OSError, ValueError, KeyError, MsdError) as exc:
            log.error("online challenger of %s could not be restored, starting afresh: %s", sid, exc)
        log.info("strategy %s: online challenger warm-started from v%s", sid, loaded.version,
                 extra={"strategy": sid})
        self.challengers[sid] = Challenger.warm_start(sid, loaded.version, loaded.model, online,
                                                      config.trainer.training.outcome_overlap_s)
        return self.challengers[sid]

    def _save(self, config: Config, challenger: Challenger, now: datetime) -> None:
        try:
            save_online_state(config.trainer.training.models_dir, challenger.strategy,
                              challenger.state_arrays(),
                              {**challenger.state_meta(),
                               "saved_at": now.isoformat()})
        except OSError as exc:
            log.error("online challenger of %s not saved: %s", challenger.strategy, exc)

    def _publish(self, config: Config, challenger: Challenger, verdict: ChallengerVerdict, now: datetime) -> None:
        sid, params = challenger.strategy, config.trainer.training
        try:
            with self.db.transaction() as conn:
                active = get_active(conn, sid)
            if active is None or active.version != challenger.base_version:
                return   # the active version changed meanwhile: the record is stale
            learned_until = datetime.fromtimestamp(verdict.learned_until, timezone.utc)
            pub = Publication(
                sid, verdict.model, "online", verdict.challenger, verdict.baselines, active,
                verdict.incumbent, None,
                {"validation": asdict(verdict.challenger), "incumbent": asdict(verdict.incumbent),
                 "calibration_rows": verdict.calibration_rows, "learned": challenger.seen_at_freeze,
                 "learned_until": learned_until.isoformat(), "gate_looks": verdict.looks,
                 "confirmed_on_a_fresh_block": verdict.confirmation,
                 "warm_started_from": challenger.base_version},
                params, active.labelled_rows,
                datetime.fromtimestamp(verdict.scored_from, timezone.utc),
                datetime.fromtimestamp(verdict.scored_to, timezone.utc),
                dataset_detail={"prequential_rows": verdict.challenger.n}, as_of=now)
            summary = publish_version(self.db, pub)
        except (DatabaseUnavailable, MsdError, OSError) as exc:
            log.error("strategy %s: online challenger passed the gate but could not be published: %s", sid, exc)
            return
        log.info("strategy %s: online challenger promoted as v%s (warm-started from v%s)", sid,
                 summary["version"], challenger.base_version,
                 extra={"strategy": sid, "reasons": "; ".join(summary["gate_reasons"])})
        self.promoted = True

    def view(self) -> dict[str, Any]:
        return {sid: c.view() for sid, c in self.challengers.items()}
