"""The exit role deciding and sending: the rules' verdict at the freshest price, the per-asset
rate, the signal recorded with the state it commits, and the exits in flight until the table
shows them (or their order ended unfilled, or they stall).

`ExitSending` is the part of msd.roles.exits.main.ExitRole that does it.
"""
from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta

from msd import metrics
from msd.market.quotes import PriceQuote, freshest, market_quotes, table_quote
from msd.market.state import MarketSnapshot
from msd.roles.exits.tables import row_facts
from msd.rules import decide, note_order, note_stalls, row_order
from msd.store.exit_state import save_states_sql
from msd.store.neighbours import PositionRow
from msd.strategies.emit import exit_signal
from msd.values.bucket import BucketState, full_bucket, take, would_allow

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
        if state is None or not state.ready:
            if state is not None and state.row is not None and state.entry_price is None:
                self.skip_once(pid, state, "incomplete_position",
                               f"positions row of {pid[1]} has no average_entry_price (nor does the fill path)")
            return
        quote = freshest([*market_quotes(self.market.asset_state(pid[0])), table_quote(state.row)])
        if quote is None:
            self.skip_once(pid, state, "no_price", "neither the market nor the positions table has a price")
            return
        signal_id = str(uuid.uuid4())
        verdict = decide(state, quote.price, self.config.rules_for(pid[0]), self.tables.instrument(pid[0]),
                         now, signal_id)
        self.stats.evaluations += 1
        metrics.EXIT_EVALUATIONS.labels(trigger).inc()
        if verdict.held is not None and verdict.held != "not_ready":
            self._held(pid, state, verdict, quote)
        if verdict.decision is None:
            self.put(pid, verdict.state)
            return
        if not would_allow(self.config.asset_rate, self.bucket(pid[0]), now):
            self.put(pid, verdict.state)
            self.stats.suppressed["asset_rate"] += 1
            metrics.EXITS_SUPPRESSED.labels("asset_rate").inc()
            return
        self.send(pid, verdict, quote, trigger, signal_id)

    def _held(self, pid: PositionId, state, verdict, quote: PriceQuote) -> None:
        """A rule fired but no exit goes out (e.g. below order-manager's minimum): counted, said once."""
        self.stats.suppressed[verdict.held] += 1
        metrics.EXITS_SUPPRESSED.labels(verdict.held).inc()
        if verdict.held == "below_min_order_value" and not state.below_minimum_warned:
            log.warning("position %s %s (%s %s at %s) is worth less than order-manager's minimum order value: "
                        "%s fired but no exit signal can close it", pid[0], pid[1], state.side.value, state.size,
                        quote.price, ",".join(r.value for r in verdict.fired),
                        extra={"position_id": pid[1], "asset": pid[0]})

    def send(self, pid: PositionId, verdict, quote: PriceQuote, trigger: str, signal_id: str) -> None:
        """Record the signal and the state it commits in one transaction, then publish."""
        decision = verdict.decision
        event = self.context.get(pid)
        trace_id, source = (event.trace_id, event.update_source) if event else (None, "positions_table")
        signal = exit_signal(decision, quote, self._snapshot(pid[0], decision.decided_at), self.config.strategy_id,
                             trace_id if trigger == "event" else None, signal_id,
                             {"trigger": trigger, "update_source": source})
        # The book holds the sent state while the outbox records it: a flush inside submit may
        # expire an older exit of this position, and forgetting that one must keep this one (expiry.py).
        self.book[pid] = verdict.sent_state
        try:
            submitted = self.outbox.submit(signal, mode="exit",
                                           also=lambda cur: save_states_sql(cur, [verdict.sent_state.to_dict()]))
        except Exception:
            self.put(pid, verdict.state)    # submit raises only before the signal is recorded
            raise
        if not submitted.recorded:
            self.put(pid, verdict.state)
            cause = "invalid" if (submitted.error or "").startswith("invalid") else "database"
            self.stats.failed[cause] += 1
            self.stats.error(f"exit not sent ({cause}): {submitted.error}")
            metrics.EXITS_NOT_SENT.labels(cause).inc()
            log.error("EXIT NOT SENT for %s position %s (%s at %s): %s; it is retried on the next evaluation",
                      pid[0], pid[1], decision.reason.value, decision.trigger_price, submitted.error,
                      extra={"trace_id": trace_id, "position_id": pid[1], "cause": cause, "exit": decision.metadata()})
            return
        self.dirty.discard(pid)                     # the sent state was saved with the signal
        _, self.buckets[pid[0]] = take(self.config.asset_rate, self.bucket(pid[0]), decision.decided_at)
        self.stats.sent[decision.reason.value] += 1
        self.stats.last_exit = f"{pid[0]} {decision.reason.value} {signal.signal_type} {decision.quantity}"
        metrics.EXIT_SIGNALS.labels(decision.reason.value).inc()
        log.info("exit signal %s: %s %s %s (%s USDT; %s at %s from %s)", signal_id, signal.signal_type, pid[0],
                 decision.quantity, decision.amount, decision.reason.value, decision.trigger_price, quote.source,
                 extra={"trace_id": signal.trace_id, "signal_id": signal_id, "position_id": pid[1],
                        "published": submitted.published})

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
        rows = self.tables.rows([pid[1] for pid in flying]) or {}
        for pid in flying:
            self.contained("exit in flight", {"position_id": pid[1], "asset": pid[0]},
                           lambda pid=pid: self._settle(pid, outcomes, rows.get(pid[1]), now))

    def _settle(self, pid: PositionId, outcomes, row: PositionRow | None, now: datetime) -> None:
        state = self.book[pid]
        for flight in state.in_flight:
            outcome = outcomes.get(flight.signal_id)
            if outcome is None or (outcome.status, outcome.filled_quantity) == (flight.order_status, flight.order_filled):
                continue
            state, released = note_order(state, flight.signal_id, outcome.status, outcome.filled_quantity)
            if released is not None:
                metrics.EXIT_ORDERS_UNFILLED.labels(outcome.status).inc()
                log.warning("exit %s of %s %s ended %s with nothing filled: it may be decided again",
                            flight.signal_id, *pid, outcome.status,
                            extra={"signal_id": flight.signal_id, "position_id": pid[1], "status": outcome.status})
                self.debouncer.offer(pid, pid, now)
        self.put(pid, state)
        if row is None or state.row is None or row_order(row_facts(row)) != row_order(state.row):
            self.apply_row(pid, row, now)
        state = self.book.get(pid)
        if state is None:
            return
        state, stalled = note_stalls(state, now, timedelta(seconds=self.config.in_flight_timeout_s))
        for flight in stalled:
            self.stats.stalls += 1
            metrics.EXIT_STALLS.inc()
            log.error("EXIT STALLED for %s position %s: signal %s (%s, %s) sent %.0fs ago, order %s, positions row "
                      "still at version %s; nothing is re-sent until a newer positions row", pid[0], pid[1],
                      flight.signal_id, flight.reason.value, flight.quantity, (now - flight.sent_at).total_seconds(),
                      flight.order_status or "not seen", state.row.version if state.row else "?",
                      extra={"signal_id": flight.signal_id, "position_id": pid[1], "asset": pid[0]})
        self.put(pid, state)
