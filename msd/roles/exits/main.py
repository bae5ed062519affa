"""The exit role: position updates + prices -> exit rules -> exit signals (DESIGN.md §7).

Every position's state lives in `self.book`, one `ExitState` per (asset, position id), built by
the pure functions of `msd.rules` from what is observed; this module only does the I/O around
them. Each turn: apply a live `exits` config, take position updates (each notes what it says
about a close, flip or reopen at once, and asks for the row to be re-read) and market updates
(each price is folded into the peak of its asset's positions as it arrives), then decide for the
positions the debouncer releases. Only the decision is debounced.

The `positions` row is the source of truth for size and entry (CONTRACTS §3.5): an event only
triggers a re-read. An exit is in flight until a newer row shows it or its own order ended
unfilled (looked up by signal id every IN_FLIGHT_CHECK_S); `exits.in_flight_timeout_s` later it
is reported stalled (ERROR line, metric, status, /healthz), and only a newer row allows another.

Every open position in the table is watched: at start and at each verification (every
VERIFY_EVERY_S, or `exits.poll_interval_s` in fallback mode, entered when no position update
arrived for `exits.fallback_after_s`) every row is read and every position evaluated. Nothing is
evaluated before the stored states are restored. One message or one position that fails is
contained: logged with its context, counted, the others go on.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from msd import metrics
from msd.values.messages import PositionUpdate
from msd.bus.publisher import ConfirmingPublisher
from msd.errors import DatabaseUnavailable
from msd.market.state import MarketSnapshot, MarketState
from msd.roles.runtime.dataplane import drain
from msd.roles.exits.report import ExitStats, report_status
from msd.roles.exits.signals import (
    PriceQuote, exit_signal, freshest, market_quotes, price_folder, row_facts, table_quote,
)
from msd.roles.exits.tables import SharedTables
from msd.roles.runtime.outbox import Outbox
from msd.roles.runtime.publishing import run_publishing_role
from msd.roles.runtime.process import DependencyHealth, RoleContext
from msd.supervisor.spawn import EXIT_OK
from msd.rules import (
    Debouncer, ExitState, InvalidPositionData, decide, note_event, note_order, note_row, note_stalls, row_order,
)
from msd.store.db import Database, retry_backoff
from msd.store.exit_state import delete_states, load_states, save_states, save_states_sql
from msd.store.migrate import apply_migrations
from msd.store.neighbours import PositionRow
from msd.values.bucket import BucketState, full_bucket, take, would_allow

log = logging.getLogger("msd.exits")
MAX_WAIT_S = 0.01           # longest wait on the positions queue per turn
OUTBOX_RETRY_S = 1.0
VERIFY_EVERY_S = 5.0        # in event mode, every open position is read from the table this often
VERIFY_BATCH = 50           # ...and evaluated, this many per turn
IN_FLIGHT_CHECK_S = 0.25    # exits in flight: their orders and rows are looked up this often,
OLD_FLIGHT_CHECK_S = 2.0    # or this often once sent more than OLD_FLIGHT_S ago
OLD_FLIGHT_S = 5.0
SAVE_EVERY_S = 0.25         # peaks moved by ticks are written at most this often (decisions at once)
TICK_GRACE = timedelta(seconds=5)   # a tick stamped this much before msd saw the position is not its price

PositionId = tuple[str, str]        # (asset, position id)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def canonical_id(position_id: object) -> str:
    """position-manager's ids are uuids (CONTRACTS §3.2); anything else is refused before it
    reaches a query (a lone surrogate would make the database driver raise)."""
    try:
        return str(uuid.UUID(position_id))
    except (ValueError, TypeError, AttributeError):
        raise InvalidPositionData("position_id", position_id, "a uuid") from None


def update_context(update: PositionUpdate) -> dict[str, Any]:
    """Everything an update said, for the log line of an update that cannot be used."""
    return {"trace_id": update.trace_id, "position_id": ascii(update.position_id)[1:-1], "asset": update.asset,
            "size": str(update.size), "unrealized_pnl_pct": str(update.unrealized_pnl_pct),
            "time_held_minutes": update.time_held_minutes, "update_source": update.update_source,
            "event_timestamp": update.timestamp.isoformat(), "mode": update.mode}


def make_debouncer(cfg) -> Debouncer:
    return Debouncer(timedelta(seconds=cfg.debounce_s), timedelta(seconds=cfg.debounce_max_delay_s))


class ExitRole:
    def __init__(self, ctx: RoleContext, db: Database, outbox: Outbox, deps: DependencyHealth | None = None):
        self.ctx, self.db, self.outbox = ctx, db, outbox
        self.deps = deps or DependencyHealth(ctx, log)     # database/broker state: one line down, one back
        self.config = ctx.config.exits
        self.market = MarketState()
        self.priced: set[str] = set()                        # assets with market data since start
        self.stats = ExitStats()
        self.book: dict[PositionId, ExitState] = {}          # the one place a position's state lives
        self.by_asset: dict[str, set[PositionId]] = {}
        self.dirty: set[PositionId] = set()
        self.gone: set[PositionId] = set()                   # flat: their stored rows are deleted
        self.unverified: set[PositionId] = set()             # restored: not compared with the table yet
        self.reread: set[PositionId] = set()                 # an event came: read the row before deciding
        self.context: dict[PositionId, PositionUpdate] = {}  # the last event, for log lines and signals
        self.refused: dict[PositionId, tuple[str, str]] = {}  # left alone: (reason, detail)
        self.skipped: set[tuple] = set()                     # (position, reason, row version) already said
        self.tables = SharedTables(db, self.contained, self.stats.error)
        self.buckets: dict[str, BucketState] = {}                # exit signals per asset
        self.debouncer: Debouncer = make_debouncer(self.config)
        self.mode = "event"
        self.last_update = time.monotonic()
        self.next_verify = self.next_flight_check = self.next_old_flight_check = self.next_save = 0.0
        self.to_verify: deque[PositionId] = deque()
        self.restored = False
        self.db_failures, self.db_retry_at, self.db_error = 0, 0.0, None

    # --- the book -----------------------------------------------------------------------------

    def put(self, pid: PositionId, state: ExitState | None, *, persist: bool = True) -> None:
        """Keep a position's new state (None: it is flat) and remember to save it (unless the
        change is not worth a write: `persist` False)."""
        old = self.book.get(pid)
        if state is None:
            if old is not None or pid in self.unverified:
                self.gone.add(pid)
            self.book.pop(pid, None)
            self.context.pop(pid, None)
            self.skipped = {key for key in self.skipped if key[0] != pid} if self.skipped else self.skipped
            self.dirty.discard(pid)
            self.by_asset.get(pid[0], set()).discard(pid)
            self.unverified.discard(pid)
            return
        if state is not old:
            self.book[pid] = state
            if persist or old is None:
                self.dirty.add(pid)
            self.gone.discard(pid)
            self.by_asset.setdefault(pid[0], set()).add(pid)

    def save(self, *, now: bool = False) -> None:
        """Write the changed states and delete the flat ones, in one transaction."""
        mono = time.monotonic()
        if not (self.dirty or self.gone) or (not now and mono < self.next_save):
            return
        dirty, gone = sorted(self.dirty), sorted(self.gone)
        try:
            with self.db.transaction() as conn:
                delete_states(conn, gone)
                save_states(conn, [self.book[pid].to_dict() for pid in dirty])
        except DatabaseUnavailable:
            raise
        except Exception:
            # One state the database refuses must not keep the others from being saved: one by one.
            for pid in dirty:
                self.contained("state save", {"position_id": ascii(pid[1])[1:-1], "asset": pid[0]},
                               lambda pid=pid: self._save_one(pid))
        self.dirty.difference_update(dirty)
        self.gone.difference_update(gone)
        self.next_save = mono + SAVE_EVERY_S

    def _save_one(self, pid: PositionId) -> None:
        with self.db.transaction() as conn:
            delete_states(conn, [pid])
            if pid in self.book:
                save_states(conn, [self.book[pid].to_dict()])

    # --- intake -------------------------------------------------------------------------------

    def apply_config(self, config) -> None:
        new = config.exits
        if (new.debounce_s, new.debounce_max_delay_s) != (self.config.debounce_s, self.config.debounce_max_delay_s):
            pending, self.debouncer = self.debouncer.flush(), make_debouncer(new)
            for pid in pending:
                self.debouncer.offer(pid, pid, utc_now())
        if new.asset_rate != self.config.asset_rate:
            self.buckets.clear()    # carrying tokens over from a different rate would be a guess
        self.outbox.retarget(config.signaller.signals_queue)
        self.config = new
        self.next_verify = 0.0      # per-asset enabled flags may have changed: read the table now
        log.info("exits config applied live; %d position states kept", len(self.book))

    def on_update(self, update: PositionUpdate) -> None:
        self.last_update = time.monotonic()
        self.stats.updates += 1
        metrics.EXIT_UPDATES.inc()
        if self.mode != "event":
            self.set_mode("event", "a position update arrived")
        self.contained("position update", update_context(update), lambda: self._take_update(update))

    def _take_update(self, update: PositionUpdate) -> None:
        pid = (update.asset, canonical_id(update.position_id))
        if update.mode == "hedge":
            self.refuse(pid, "hedge_mode", "hedge-mode position (long_size/short_size) is not managed by msd")
            return
        if not self.config.enabled_for(update.asset):
            self.refuse(pid, "disabled", f"exits.per_asset.{update.asset}.enabled is false")
            return
        now = utc_now()
        old = self.book.get(pid)
        new = note_event(old, update.asset, pid[1], update.size, update.timestamp, now)
        # An event that only moves `last_event_at` is not worth a write; a restart then judges
        # staleness by the row's last_updated, which is as good.
        routine = old is not None and new is not None and replace(new, last_event_at=old.last_event_at) == old
        self.put(pid, new, persist=not routine)
        self.context[pid] = update
        self.reread.add(pid)
        self.debouncer.offer(pid, pid, now)

    def on_price(self, update) -> None:
        self.contained("market update", {"asset": getattr(update, "asset", None)}, lambda: self._take_price(update))

    def _take_price(self, update) -> None:
        self.market.apply(update)
        self.priced.add(update.asset)
        watched = self.by_asset.get(update.asset)
        if not watched:
            return
        fold = price_folder(update, self.market)
        if fold is None:
            return
        now = utc_now()
        for pid in list(watched):
            state = self.book[pid]
            if update.timestamp < state.opened_at - TICK_GRACE:
                continue
            self.put(pid, fold(state))
            self.debouncer.offer(pid, pid, now)

    def refuse(self, pid: PositionId, reason: str, detail: str) -> None:
        """A position msd leaves alone: one log line when it is first seen, then status only."""
        if self.refused.get(pid, (None,))[0] != reason:
            (log.error if reason == "hedge_mode" else log.info)(
                "position %s %s left alone: %s", pid[0], pid[1], detail,
                extra={"position_id": pid[1], "asset": pid[0], "reason": reason})
        self.refused[pid] = (reason, detail)
        self.put(pid, None)

    def set_mode(self, mode: str, why: str) -> None:
        self.mode = mode
        metrics.EXIT_FALLBACK.set(1 if mode == "fallback" else 0)
        (log.warning if mode == "fallback" else log.info)("exits now %s-driven: %s", mode, why,
                                                           extra={"exit_mode": mode})
        self.next_verify = 0.0

    def contained(self, what: str, context: dict[str, Any], work: Callable[[], None]) -> None:
        """Run the work of one message or one position; its failure is its own (module doc)."""
        try:
            work()
        except DatabaseUnavailable:
            raise
        except InvalidPositionData as exc:
            self.skip("invalid_" + exc.field.split(".")[-1].replace(" ", "_"), str(exc), context,
                      error=exc.field == "position_id")
        except Exception as exc:
            self.stats.errors += 1
            self.stats.error(f"{what}: {type(exc).__name__}: {exc}")
            metrics.EXIT_ERRORS.inc()
            log.exception("%s failed and was skipped: %s", what, type(exc).__name__, extra=context)

    def skip_once(self, pid: PositionId, state: ExitState, reason: str, detail: str) -> None:
        """A position that cannot be evaluated yet: said once per position and row version, not
        on every tick; an event that triggered the evaluation is always answered."""
        key = (pid, reason, state.row.version if state.row else None)
        if key not in self.skipped or pid in self.context:
            self.skipped.add(key)
            self.skip(reason, detail, self.event_context(pid))
            self.context.pop(pid, None)

    def event_context(self, pid: PositionId) -> dict[str, Any]:
        event = self.context.get(pid)
        return update_context(event) if event is not None else {"position_id": pid[1], "asset": pid[0]}

    def skip(self, reason: str, detail: str, context: dict[str, Any], *, error: bool = False) -> None:
        """Input that cannot be used: logged with its context, counted, skipped."""
        self.stats.invalid[reason] += 1
        metrics.EXIT_INPUTS_INVALID.labels(reason).inc()
        self.stats.error(f"{reason}: {detail}")
        (log.error if error else log.warning)("position not evaluated (%s): %s", reason, detail,
                                              extra={"reason": reason, **context})

    # --- one turn -----------------------------------------------------------------------------

    def step(self) -> None:
        """One turn of msd.roles.runtime.publishing: take the inputs, then evaluate what is due."""
        drain(self.ctx.queues["positions"], self.on_update, timeout=MAX_WAIT_S)
        drain(self.ctx.queues["exit_prices"], self.on_price, timeout=0)
        self.advance()

    def may_flush(self) -> bool:
        return self.restored     # never publish before the stored states are back

    def flush_interval_s(self) -> float:
        return OUTBOX_RETRY_S

    def advance(self) -> None:
        mono = time.monotonic()
        if mono < self.db_retry_at:
            return
        try:
            if not self.restored:
                self.restore()
            self._check_mode(mono)
            now = utc_now()
            due = self.debouncer.due(now)
            if due:
                self.evaluate_due(due, now)
            if mono >= self.next_flight_check:
                self.next_flight_check = mono + IN_FLIGHT_CHECK_S
                self.check_in_flight(now)
            if mono >= self.next_verify:
                self.next_verify = mono + (self.config.poll_interval_s if self.mode == "fallback" else VERIFY_EVERY_S)
                self.verify(now)
            if self.to_verify:
                self.evaluate_verified(now)
            self.save()
        except DatabaseUnavailable as exc:
            self._database_down(exc)
            return
        except Exception as exc:
            # Per message and per position failures are contained where they happen; this is the
            # last line, so a bug in a turn costs that turn, never the role.
            self.stats.errors += 1
            self.stats.error(f"turn: {type(exc).__name__}: {exc}")
            metrics.EXIT_ERRORS.inc()
            log.exception("exit role turn failed: %s", type(exc).__name__)
            return
        # "Back" is said by DependencyHealth, and only after a transaction committed: a turn
        # with nothing to evaluate proves nothing about the database.
        self.db_failures, self.db_error = 0, None

    def _check_mode(self, mono: float) -> None:
        quiet = mono - self.last_update
        if self.mode == "event" and quiet > self.config.fallback_after_s:
            self.set_mode("fallback", f"no position update for {quiet:.1f}s; polling the positions table every "
                                      f"{self.config.poll_interval_s}s")

    def _database_down(self, exc: DatabaseUnavailable) -> None:
        delay = retry_backoff(self.db_failures, base=0.2, cap=5.0)
        self.db_failures += 1
        self.db_retry_at = time.monotonic() + delay
        self.db_error = str(exc)
        self.stats.error(f"database: {exc}")
        if not self.deps.is_down("database"):     # e.g. the migrations' own connection failed
            self.deps.failed("database", str(exc))
        log.debug("exit evaluation paused %.1fs: %s", delay, exc)

    def restore(self) -> None:
        """Load every stored state (once per process), then compare them all with the table."""
        apply_migrations(self.ctx.config.database.url)
        with self.db.transaction() as conn:
            rows = load_states(conn)
        for row in rows:
            try:
                state = ExitState.from_dict(row.state)
            except InvalidPositionData as exc:
                self.skip("damaged_state", str(exc), {"asset": row.asset, "position_id": row.position_key})
                self.gone.add((row.asset, row.position_key))
                continue
            pid = (state.asset, state.key.position_id)
            self.put(pid, state)
            self.unverified.add(pid)
        self.dirty.clear()
        self.restored = True
        log.info("restored exit state of %d positions", len(self.book))
        self.verify(utc_now())

    # --- reading the table --------------------------------------------------------------------

    def apply_row(self, pid: PositionId, row: PositionRow | None, now: datetime) -> None:
        """What a read of the position's row changes (msd.rules.note_row)."""
        state = self.book.get(pid)
        if row is None:
            if state is not None:
                log.info("position %s %s is no longer in the positions table", *pid,
                         extra={"position_id": pid[1], "asset": pid[0]})
            self.put(pid, None)
            return
        if row.mode == "hedge":
            self.refuse(pid, "hedge_mode", "hedge-mode row (long_size/short_size): msd does not read it by "
                                           "the sign of size and leaves it alone")
            return
        if not self.config.enabled_for(row.asset):
            self.refuse(pid, "disabled", f"exits.per_asset.{row.asset}.enabled is false")
            return
        self.refused.pop(pid, None)
        if (state is not None and state.row is not None and pid not in self.unverified
                and (row.version, row.last_updated) == (state.row.version, state.row.last_updated)):
            return                                  # nothing written since the last read
        facts = row_facts(row)
        changed = state is None or state.row is None or row_order(facts) != row_order(state.row)
        fill_entry = None
        if changed and facts.size != 0 and (facts.closed_at is not None or facts.average_entry_price is None):
            fill_entry = self.tables.fill_path_entry(facts, row)
        closed_between = pid in self.unverified and self.tables.closed_between(state, facts)
        self.unverified.discard(pid)
        outcome = note_row(state, facts, now, closed_between=closed_between, fill_entry=fill_entry)
        if outcome.change in ("opened", "new_position", "closed") and (state is not None or outcome.change != "closed"):
            new = outcome.state
            log.info("position %s %s: %s%s", pid[0], pid[1], outcome.change.replace("_", " "),
                     f" ({new.side.value} {new.size} at {new.entry_price}, opened {new.opened_at.isoformat()} "
                     f"by {new.opened_by})" if new is not None else "",
                     extra={"position_id": pid[1], "asset": pid[0], "change": outcome.change})
        for flight in outcome.released:
            log.info("exit %s of %s %s seen in the positions table (version %d)", flight.signal_id, *pid,
                     facts.version, extra={"signal_id": flight.signal_id, "position_id": pid[1]})
        self.put(pid, outcome.state)

    def verify(self, now: datetime) -> None:
        """Read every open position and every one in the book from the table, then evaluate all."""
        open_rows = self.tables.open_rows()
        if open_rows is None:
            return
        others = sorted(pid for pid in self.book if pid not in open_rows)
        extra = self.tables.rows([pid[1] for pid in others]) if others else {}
        if extra is None:
            return
        for pid, row in open_rows.items():
            self.contained("positions row", {"position_id": pid[1], "asset": pid[0]},
                           lambda pid=pid, row=row: self.apply_row(pid, row, now))
        for pid in others:
            self.contained("positions row", {"position_id": pid[1], "asset": pid[0]},
                           lambda pid=pid: self.apply_row(pid, extra.get(pid[1]), now))
        self.refused = {pid: why for pid, why in self.refused.items() if pid in open_rows}
        self.to_verify = deque(sorted(self.book))      # evaluated a batch per turn (evaluate_verified)

    def evaluate_verified(self, now: datetime) -> None:
        """Evaluate the next few positions of the last verification: a few thousand evaluations in
        one turn would hold up the position updates that arrive meanwhile."""
        trigger = "poll" if self.mode == "fallback" else "verify"
        for _ in range(min(VERIFY_BATCH, len(self.to_verify))):
            self.decide_one(self.to_verify.popleft(), now, trigger)

    def evaluate_due(self, due: list[PositionId], now: datetime) -> None:
        stale = sorted(pid for pid in due if pid in self.reread)
        if stale:
            try:
                rows = self.tables.rows([pid[1] for pid in stale])
            except DatabaseUnavailable:
                for pid in due:         # what was not evaluated waits for the database
                    self.debouncer.offer(pid, pid, now)
                raise
            for pid in stale:
                self.reread.discard(pid)
                if rows is None:
                    self.skip("positions_table_unusable", f"no positions row for {pid[1]}", {"position_id": pid[1]})
                    continue
                found, state = rows.get(pid[1]), self.book.get(pid)
                if state is not None and state.row is None:     # seen by its event only
                    context = self.event_context(pid)
                    if found is None:
                        self.skip("position_not_in_table", f"no positions row for position {pid[1]}", context)
                    elif found.size == 0:
                        # A late or redelivered update of a position the table shows flat.
                        self.skip("stale_update", f"position {pid[1]} is flat in the positions table", context)
                self.contained("positions row", {"position_id": pid[1], "asset": pid[0]},
                               lambda pid=pid: self.apply_row(pid, rows.get(pid[1]), now))
        for pid in due:
            self.decide_one(pid, now, "event" if pid in stale else "price")

    # --- deciding and sending -----------------------------------------------------------------

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
            self.stats.suppressed[verdict.held] += 1
            metrics.EXITS_SUPPRESSED.labels(verdict.held).inc()
            if verdict.held == "below_min_order_value" and not state.below_minimum_warned:
                log.warning("position %s %s (%s %s at %s) is worth less than order-manager's minimum order value: "
                            "%s fired but no exit signal can close it", pid[0], pid[1], state.side.value, state.size,
                            quote.price, ",".join(r.value for r in verdict.fired),
                            extra={"position_id": pid[1], "asset": pid[0]})
        if verdict.decision is None:
            self.put(pid, verdict.state)
            return
        if not would_allow(self.config.asset_rate, self.bucket(pid[0]), now):
            self.put(pid, verdict.state)
            self.stats.suppressed["asset_rate"] += 1
            metrics.EXITS_SUPPRESSED.labels("asset_rate").inc()
            return
        self.send(pid, verdict, quote, trigger, signal_id)

    def send(self, pid: PositionId, verdict, quote: PriceQuote, trigger: str, signal_id: str) -> None:
        """Record the signal and the state it commits in one transaction, then publish."""
        decision = verdict.decision
        event = self.context.get(pid)
        trace_id, source = (event.trace_id, event.update_source) if event else (None, "positions_table")
        signal = exit_signal(decision, quote, self._snapshot(pid[0], decision.decided_at), self.config.strategy_id,
                             trace_id if trigger == "event" else None, signal_id,
                             {"trigger": trigger, "update_source": source})
        submitted = self.outbox.submit(signal, mode="exit",
                                       also=lambda cur: save_states_sql(cur, [verdict.sent_state.to_dict()]))
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
        self.book[pid] = verdict.sent_state        # saved with the signal
        self.dirty.discard(pid)
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

    # --- reporting ----------------------------------------------------------------------------

    def report(self) -> None:
        try:
            report_status(self, utc_now())
        except Exception:  # a status line must never take the role down
            log.exception("exit status report failed")


def run(ctx: RoleContext) -> int:
    cfg = ctx.config
    deps = DependencyHealth(ctx, log)
    db = Database(cfg.database.url, connect_timeout=cfg.database.connect_timeout_s, application_name="msd-exits",
                  on_result=deps.reporter("database"))
    publisher = ConfirmingPublisher(cfg.rabbitmq.url, connection_name="msd-exits", on_state=deps.reporter("broker"))
    # Exits do not expire yet: a stale exit needs re-deciding and its ladder step rolled back
    # (Expiry.on_expired), which the exit state does not support yet (see README).
    role = ExitRole(ctx, db, Outbox(db, publisher, cfg.signaller.signals_queue, modes=("exit",)), deps)
    ctx.booted()
    run_publishing_role(ctx, role)
    publisher.close()
    db.close()
    return EXIT_OK
