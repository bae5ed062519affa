"""Evaluating one position and acting on the outcome: state saved, exit signal through the outbox.

An exit is remembered before it is sent: the committed state (cooldown start, ladder step done)
is written first, then the signal goes into the outbox. Dying between the two loses that one
exit until the rule fires again after the cooldown; the other order could send the same exit
twice after a restart, and a second "sell" for a long the first already closed would open a
short. If the outbox cannot take the signal, the state falls back to `track`'s (nothing counted
as sent) and the failure is loud: error log, metric, status.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from msd import metrics
from msd.errors import DatabaseUnavailable
from msd.market.state import MarketSnapshot, MarketState
from msd.roles.exit_engine import Evaluation, ExitEngine, Watched
from msd.roles.exit_inputs import PriceQuote, exit_signal
from msd.roles.outbox import Outbox
from msd.rules import InvalidPositionData
from msd.store.db import Database
from msd.store.exit_state import delete_states, save_states
from msd.store.outbox import pending_exit_exists

log = logging.getLogger("msd.exits")
# The spread/volume/volatility put into an exit signal's snapshot must be this recent; older
# values are left out (the price is always the trigger price).
SNAPSHOT_MAX_AGE_S = 60.0


@dataclass
class ExitStats:
    updates: int = 0
    evaluations: int = 0
    sent: Counter = field(default_factory=Counter)         # by exit reason
    suppressed: Counter = field(default_factory=Counter)   # by pacing reason
    failed: Counter = field(default_factory=Counter)       # by cause
    invalid: Counter = field(default_factory=Counter)      # by reason
    errors: int = 0
    last_error: str | None = None
    last_exit: str | None = None

    def error(self, text: str) -> None:
        self.last_error = text


class ExitOutput:
    def __init__(self, db: Database, outbox: Outbox, engine: ExitEngine, market: MarketState, stats: ExitStats):
        self.db, self.outbox, self.engine, self.market, self.stats = db, outbox, engine, market, stats

    def skip(self, reason: str, detail: str, context: Mapping[str, Any]) -> None:
        """An update or row that cannot be evaluated: logged with its context, counted, skipped."""
        self.stats.invalid[reason] += 1
        metrics.EXIT_INPUTS_INVALID.labels(reason).inc()
        self.stats.error(f"{reason}: {detail}")
        log.warning("position not evaluated (%s): %s", reason, detail, extra={"reason": reason, **context})

    def evaluate(self, watched: Watched, quote: PriceQuote, now: datetime, trigger: str) -> None:
        """Evaluate one position; only DatabaseUnavailable (while sending) escapes, for the caller to retry."""
        context = {"trace_id": watched.trace_id, "position_id": watched.view.key.position_id,
                   "asset": watched.view.key.asset, "trigger": trigger}
        try:
            evaluation = self.engine.evaluate(watched.view, quote, now)
        except InvalidPositionData as exc:
            self.skip("invalid_position", str(exc), context)
            return
        except Exception as exc:  # one bad evaluation must not take the other positions down
            self.stats.errors += 1
            self.stats.error(f"{type(exc).__name__}: {exc}")
            metrics.EXIT_ERRORS.inc()
            log.exception("exit evaluation failed", extra=context)
            return
        self.stats.evaluations += 1
        metrics.EXIT_EVALUATIONS.labels(trigger).inc()
        if evaluation.suppressed:
            self.stats.suppressed[evaluation.suppressed] += 1
            metrics.EXITS_SUPPRESSED.labels(evaluation.suppressed).inc()
        if evaluation.decision is None:
            self.engine.keep(evaluation, sent=False)
            return
        self.send(evaluation, watched, trigger)

    def send(self, evaluation: Evaluation, watched: Watched, trigger: str) -> None:
        decision = evaluation.decision
        if self.outbox.backlog and self._exit_waiting(decision.key.position_id):
            # The broker is (or was) down and an earlier exit of this position is still queued:
            # another one would close the position twice and open the reverse side.
            self.engine.keep(evaluation, sent=False)
            self.stats.suppressed["exit_pending"] += 1
            metrics.EXITS_SUPPRESSED.labels("exit_pending").inc()
            return
        self.engine.keep(evaluation, sent=True)
        try:
            self.save()
        except DatabaseUnavailable as exc:
            self.engine.keep(evaluation, sent=False)
            self._not_sent(evaluation, "database", str(exc), watched)
            raise
        signal = exit_signal(decision, evaluation.quote, self._snapshot(decision.key.asset, decision.decided_at),
                             self.engine.config.strategy_id, watched.trace_id if trigger == "event" else None,
                             {"trigger": trigger, "update_source": watched.update_source})
        submitted = self.outbox.submit(signal, mode="exit")
        if not submitted.recorded:
            self.engine.keep(evaluation, sent=False)
            cause = "invalid" if (submitted.error or "").startswith("invalid") else "database"
            self._not_sent(evaluation, cause, submitted.error or "not recorded", watched)
            return
        self.engine.spend(decision.key.asset, decision.decided_at)
        self.stats.sent[decision.reason.value] += 1
        self.stats.last_exit = f"{decision.key.asset} {decision.reason.value} {signal.signal_type} {signal.amount}"
        metrics.EXIT_SIGNALS.labels(decision.reason.value).inc()
        log.info("exit signal %s: %s %s %s USDT (%s at %s from %s)", signal.signal_id, signal.signal_type,
                 signal.asset, signal.amount, decision.reason.value, decision.trigger_price, evaluation.quote.source,
                 extra={"trace_id": signal.trace_id, "signal_id": signal.signal_id,
                        "position_id": decision.key.position_id, "published": submitted.published})

    def _exit_waiting(self, position_id: str) -> bool:
        with self.db.transaction() as conn:
            return pending_exit_exists(conn, position_id)

    def _not_sent(self, evaluation: Evaluation, cause: str, error: str, watched: Watched) -> None:
        decision = evaluation.decision
        self.stats.failed[cause] += 1
        self.stats.error(f"exit not sent ({cause}): {error}")
        metrics.EXITS_NOT_SENT.labels(cause).inc()
        log.error("EXIT NOT SENT for %s position %s (%s at %s): %s; it is retried on the next evaluation",
                  decision.key.asset, decision.key.position_id, decision.reason.value, decision.trigger_price, error,
                  extra={"trace_id": watched.trace_id, "position_id": decision.key.position_id, "cause": cause,
                         "exit": decision.metadata()})

    def _snapshot(self, asset: str, now: datetime) -> MarketSnapshot | None:
        snap = self.market.snapshot(asset, now, SNAPSHOT_MAX_AGE_S)
        return snap if isinstance(snap, MarketSnapshot) else None

    def save(self) -> None:
        """Write the state changes since the last save in one transaction (deletes first)."""
        deleted, upserts = self.engine.changes()
        if not deleted and not upserts:
            return
        with self.db.transaction() as conn:
            delete_states(conn, deleted)
            save_states(conn, upserts)
        self.engine.saved()
