"""The exit role deciding and sending: the step's `Evaluate` (msd.strategies.exit_step: the
rules' verdict at the freshest price, the per-asset rate and its token), the signal recorded
with the state it commits (and the asset's bucket the step returned), and the exits in flight
until the table shows them (or their order ended unfilled, or they stall: the step's
OrderSeen, Published and StallCheck).

`ExitSending` is the part of msd.roles.exits.main.ExitRole that does it.
"""
from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta

from msd import metrics
from msd.market.quotes import PriceQuote, market_quotes
from msd.market.state import MarketSnapshot
from msd.roles.exits.tables import row_facts
from msd.strategies.exit_step import (
    Evaluate, Evaluated, OrderSeen, Published, SendExit, Skipped, StallCheck, Stalled, Unfilled, judged_quote, step,
)
from msd.rules import REJECTION_BACKOFF_CAP, ExitState, row_order
from msd.store.exit_state import load_position_state, save_states_sql, signal_recorded
from msd.store.outbox import published_signals
from msd.store.neighbours import PositionRow
from msd.strategies.emit import exit_signal
from msd.values.bucket import BucketState, full_bucket

log = logging.getLogger("msd.exits")
OLD_FLIGHT_CHECK_S = 2.0    # exits in flight sent more than OLD_FLIGHT_S ago are looked up this often
OLD_FLIGHT_S = 5.0
PositionId = tuple[str, str]        # (asset, position id)


class ExitSending:
    def decide_one(self, pid: PositionId, now: datetime, trigger: str) -> None:
        self.contained("exit evaluation", {"position_id": pid[1], "asset": pid[0], "trigger": trigger},
                       lambda: self._decide(pid, now, trigger))

    def _decide(self, pid: PositionId, now: datetime, trigger: str) -> None:
        state = self.book.get(pid)
        if state is None:
            return
        quotes = tuple(market_quotes(self.market.asset_state(pid[0])))
        judged = judged_quote(state, quotes)
        if not isinstance(judged, PriceQuote):
            if isinstance(judged, Skipped):
                self.skip_once(pid, state, judged.reason, judged.detail)
            return
        signal_id = self.unsure.get(pid)
        if signal_id is not None and self._recorded_after_all(pid, signal_id):
            return
        signal_id = signal_id or str(uuid.uuid4())
        stepped = step(state, Evaluate(quotes, self.config.rules_for(pid[0]), self.tables.instrument(pid[0]),
                                       signal_id, rate=self.config.asset_rate, bucket=self.bucket(pid[0])), now)
        self.stats.evaluations += 1
        metrics.EXIT_EVALUATIONS.labels(trigger).inc()
        self._held(pid, state, stepped.first(Evaluated))
        exit = stepped.first(SendExit)
        if exit is None:
            self.put(pid, stepped.state)
            return
        self.send(pid, exit, stepped.state, trigger)

    def _held(self, pid: PositionId, state: ExitState, said: Evaluated) -> None:
        """A rule fired but no exit goes out (pacing, e.g. in flight or cooldown, or below
        order-manager's minimum): counted once per hold, not per evaluation (every tick evaluates
        again); a hold ends with a decision, with no rule firing, or with another reason."""
        held = said.held
        if held is None:
            self.holding.pop(pid, None)
            return
        if self.holding.get(pid) == held:
            return
        self.holding[pid] = held
        self.stats.suppressed[held] += 1
        metrics.EXITS_SUPPRESSED.labels(held).inc()
        if said.newly_below_minimum:
            log.warning("position %s %s (%s %s at %s) is worth less than order-manager's minimum order value: "
                        "%s fired but no exit signal can close it", pid[0], pid[1], state.side.value, state.size,
                        said.quote.price, ",".join(r.value for r in said.fired),
                        extra={"position_id": pid[1], "asset": pid[0]})

    def send(self, pid: PositionId, exit: SendExit, sent_state: ExitState, trigger: str) -> None:
        """Record the signal and the state it commits in one transaction, then publish."""
        decision, quote, signal_id = exit.decision, exit.quote, exit.signal_id
        event = self.context.get(pid[1])
        trace_id, source = (event.trace_id, event.update_source) if event else (None, "positions_table")
        signal = exit_signal(decision, quote, self._snapshot(pid[0], decision.decided_at), self.config.strategy_id,
                             trace_id if trigger == "event" else None, signal_id,
                             {"trigger": trigger, "update_source": source})
        self.holding.pop(pid, None)
        # The book holds the sent state while the outbox records it: a flush inside submit may
        # expire an older exit of this position, and forgetting that one must keep this one (expiry.py).
        self.book[pid] = sent_state
        try:
            submitted = self.outbox.submit(signal, mode="exit",
                                           also=lambda cur: save_states_sql(cur, [sent_state.to_dict()]))
        except Exception:
            self.put(pid, exit.unsent)      # submit raises only before the signal is recorded
            raise
        if not submitted.recorded:
            self.put(pid, exit.unsent)
            cause = "invalid" if (submitted.error or "").startswith("invalid") else "database"
            if cause == "database":
                # The write may have committed with only its reply lost: the next decision for this
                # position re-sends the same decision under the same signal_id (order-manager dedupes
                # by it), once it is known that the outbox does not hold it already.
                self.unsure[pid] = signal_id
            self.stats.failed[cause] += 1
            self.stats.error(f"exit not sent ({cause}): {submitted.error}")
            metrics.EXITS_NOT_SENT.labels(cause).inc()
            log.error("EXIT NOT SENT for %s position %s (%s at %s): %s; it is retried on the next evaluation",
                      pid[0], pid[1], decision.reason.value, decision.trigger_price, submitted.error,
                      extra={"trace_id": trace_id, "position_id": pid[1], "cause": cause, "exit": decision.metadata()})
            return
        self.dirty.discard(pid)                     # the sent state was saved with the signal
        self.unsure.pop(pid, None)
        if exit.bucket is not None:
            self.buckets[pid[0]] = exit.bucket      # the step took the exit's token
        self.stats.sent[decision.reason.value] += 1
        self.stats.last_exit = f"{pid[0]} {decision.reason.value} {signal.signal_type} {decision.quantity}"
        metrics.EXIT_SIGNALS.labels(decision.reason.value).inc()
        log.info("exit signal %s: %s %s %s (%s USDT; %s at %s from %s)", signal_id, signal.signal_type, pid[0],
                 decision.quantity, decision.amount, decision.reason.value, decision.trigger_price, quote.source,
                 extra={"trace_id": signal.trace_id, "signal_id": signal_id, "position_id": pid[1],
                        "dispatched": submitted.dispatched})

    def _recorded_after_all(self, pid: PositionId, signal_id: str) -> bool:
        """An exit whose outbox write seemed to fail: if the outbox holds it, so does the store
        hold the state it committed (one statement): that state is taken and nothing is decided."""
        with self.db.autocommit() as conn:
            stored = load_position_state(conn, *pid) if signal_recorded(conn, signal_id) else None
        if stored is None:
            return False
        del self.unsure[pid]
        self.book[pid] = ExitState.from_dict(stored.state)
        self.dirty.discard(pid)
        flight = self.book[pid].in_flight[-1] if self.book[pid].in_flight else None
        if flight is not None and flight.signal_id == signal_id:
            self.stats.sent[flight.reason.value] += 1       # recorded after all: counted once, here
            metrics.EXIT_SIGNALS.labels(flight.reason.value).inc()
        log.warning("exit %s of %s %s was recorded after all (only the database's reply was lost): it goes out "
                    "from the outbox with its own signal_id", signal_id, *pid,
                    extra={"signal_id": signal_id, "position_id": pid[1], "asset": pid[0]})
        return True

    def bucket(self, asset: str) -> BucketState:
        return self.buckets.get(asset) or full_bucket(self.config.asset_rate)

    def _snapshot(self, asset: str, now: datetime) -> MarketSnapshot | None:
        snap = self.market.snapshot(asset, now, 60.0)
        return snap if isinstance(snap, MarketSnapshot) else None

    # --- exits in flight ----------------------------------------------------------------------

    def check_in_flight(self, now: datetime) -> None:
        """Look up the orders and rows of positions with exits in flight; report the stalled."""
        mono, young = time.monotonic(), now - timedelta(seconds=OLD_FLIGHT_S)
        every = mono >= self.next_old_flight_check
        if every:
            self.next_old_flight_check = mono + OLD_FLIGHT_CHECK_S
        flying = sorted(pid for pid, state in self.book.items()
                        if state.in_flight and (every or any(f.sent_at > young for f in state.in_flight)))
        if not flying:
            return
        outcomes = self.tables.order_outcomes([f.signal_id for pid in flying for f in self.book[pid].in_flight])
        unconfirmed = [f.signal_id for pid in flying for f in self.book[pid].in_flight if not f.published]
        published = self._published(unconfirmed) if unconfirmed else set()
        # Every write of a row publishes an event, which re-reads it: the rows themselves are read
        # here on the slower pass (and always while polling), for an event lost on the way.
        rows = self.tables.rows([pid[1] for pid in flying]) if every or self.mode != "event" else None
        for pid in flying:
            # A row that could not be read (rows None, or its id left out) is not a closed position.
            read = rows is not None and pid[1] in rows
            self.contained("exit in flight", {"position_id": pid[1], "asset": pid[0]},
                           lambda pid=pid, read=read: self._settle(pid, outcomes, published, read,
                                                                   rows and rows.get(pid[1]), now))

    def _unfilled(self, pid: PositionId, flight, status: str, state: ExitState, now: datetime) -> None:
        """An exit's order ended with nothing filled: counted; the first refusal in a row is said
        and decided again at once, the second starts the backoff (one ERROR line per streak)."""
        metrics.EXIT_ORDERS_UNFILLED.labels(status).inc()
        context = {"signal_id": flight.signal_id, "position_id": pid[1], "asset": pid[0], "status": status}
        if state.rejections == 2:
            log.error("EXITS REFUSED: %s position %s: exit %s ended %s, the second refusal in a row; further "
                      "decisions wait %.0fs, doubling per refusal (at most %.0fs), until an exit takes effect",
                      pid[0], pid[1], flight.signal_id, status, (state.retry_at - now).total_seconds(),
                      REJECTION_BACKOFF_CAP.total_seconds(), extra=context)
        elif state.rejections <= 1:
            log.warning("exit %s of %s %s ended %s with nothing filled: it may be decided again",
                        flight.signal_id, *pid, status, extra=context)
        self.debouncer.offer(pid, pid, now)       # in backoff: ticks and verifications try again later

    def confirmed(self, signal_id: str, confirmed_at: float | None) -> None:
        """The broker confirmed an exit (the outbox's verdict, applied on this loop's turn): it is
        published, so the in-flight check need not look it up in msd.signals. A refused or lost one
        (None) stays unpublished; after a restart the lookup still finds what was confirmed before."""
        if confirmed_at is None:
            return
        for pid, state in self.book.items():
            if any(f.signal_id == signal_id and not f.published for f in state.in_flight):
                self.put(pid, step(state, Published(frozenset({signal_id})), self.clock()).state)
                return

    def _published(self, signal_ids: list[str]) -> set[str]:
        with self.db.autocommit() as conn:
            return published_signals(conn, signal_ids)

    def _settle(self, pid: PositionId, outcomes, published: set[str], read: bool, row: PositionRow | None,
                now: datetime) -> None:
        state = step(self.book[pid], Published(frozenset(published)), now).state
        for flight in state.in_flight:
            outcome = outcomes.get(flight.signal_id)
            if outcome is None or (outcome.status, outcome.filled_quantity) == (flight.order_status,
                                                                                flight.order_filled):
                continue
            stepped = step(state, OrderSeen(flight.signal_id, outcome.status, outcome.filled_quantity), now)
            state = stepped.state
            for unfilled in stepped.effects:
                if isinstance(unfilled, Unfilled):
                    self._unfilled(pid, unfilled.flight, unfilled.status, state, now)
        self.put(pid, state)
        if read and (row is None or state.row is None or row_order(row_facts(row)) != row_order(state.row)):
            self.apply_row(pid, row, now)
        if pid in self.book:
            self._stalls(pid, now)

    def _stalls(self, pid: PositionId, now: datetime) -> None:
        """Exits in flight past exits.in_flight_timeout_s: said and counted once each."""
        stepped = step(self.book[pid], StallCheck(timedelta(seconds=self.config.in_flight_timeout_s)), now)
        state = stepped.state
        for flight in (effect.flight for effect in stepped.effects if isinstance(effect, Stalled)):
            self.stats.stalls += 1
            metrics.EXIT_STALLS.inc()
            log.error("EXIT STALLED for %s position %s: signal %s (%s, %s) sent %.0fs ago, order %s, positions row "
                      "still at version %s; nothing is re-sent: another exit needs this signal published and a "
                      "newer positions row", pid[0], pid[1], flight.signal_id, flight.reason.value, flight.quantity,
                      (now - flight.sent_at).total_seconds(), flight.order_status or "not seen",
                      state.row.version if state.row else "?",
                      extra={"signal_id": flight.signal_id, "position_id": pid[1], "asset": pid[0]})
        self.put(pid, state)
