"""The exit role: position updates + prices -> exit rules -> exit signals (DESIGN.md §7).

Each turn: apply a live `exits` config if the supervisor sent one, take position updates (the
newest per position waits in the debouncer) and market updates (a price tick re-evaluates the
positions of its asset), then evaluate what the debouncer releases. A released position that
had an update is re-read from the shared `positions` table (entry price, open time, the mark);
one released by a tick is evaluated from what the last read found, without the database.

Mode: event-driven while position updates arrive. When none has arrived for
`exits.fallback_after_s` (position-manager or our consumer is down, or the queue is stalled), the
role also polls every open position from the table each `exits.poll_interval_s`, which catches
time exits, closes and marks the stream no longer tells us about. The first update switches back.

Nothing is evaluated before the stored states are restored: a position evaluated against a
fresh state would overwrite the trailing peak the previous run saved.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from msd import metrics
from msd.bus.messages import PositionUpdate
from msd.bus.publisher import ConfirmingPublisher
from msd.errors import DatabaseUnavailable
from msd.market.state import MarketState
from msd.roles.dataplane import drain
from msd.roles.exit_engine import ExitEngine, PositionId, Watched
from msd.roles.exit_inputs import current_size, freshest, market_quotes, position_view, table_quote
from msd.roles.exit_output import ExitOutput, ExitStats
from msd.roles.outbox import Outbox
from msd.roles.publishing import run_publishing_role
from msd.roles.runtime import EXIT_OK, DependencyHealth, RoleContext
from msd.rules import Debouncer, ExitState, InvalidPositionData
from msd.store.db import Database, retry_backoff
from msd.store.exit_state import load_states
from msd.store.migrate import apply_migrations
from msd.store.neighbours import PositionRow, SharedSchemaError, read_open_positions, read_positions

log = logging.getLogger("msd.exits")
# Longest wait on the positions queue per turn: bounds how late a price tick or a debounced
# position is looked at, without spinning when nothing happens.
MAX_WAIT_S = 0.01
OUTBOX_RETRY_S = 1.0
VERIFY_EVERY_S = 5.0    # in event mode, watched positions are checked against the table this often


def update_context(update: PositionUpdate) -> dict[str, Any]:
    """Everything an update said, for the log line of an update that cannot be evaluated."""
    return {"trace_id": update.trace_id, "position_id": update.position_id, "asset": update.asset,
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
        self.engine = ExitEngine(self.config)
        self.market = MarketState()
        self.priced: set[str] = set()
        self.stats = ExitStats()
        self.output = ExitOutput(db, outbox, self.engine, self.market, self.stats)
        self.debouncer: Debouncer = make_debouncer(self.config)
        self.fresh: dict[PositionId, PositionUpdate] = {}     # newest unevaluated update per position
        self.open_announced: set[PositionId] = set()          # positions the stream last said are open
        self.mode = "event"
        self.last_update = time.monotonic()
        self.next_poll = 0.0
        self.next_verify = 0.0
        self.restored = False
        self.db_failures = 0
        self.db_retry_at = 0.0
        self.db_error: str | None = None

    # --- intake -----------------------------------------------------------------------------

    def apply_config(self, config) -> None:
        new = config.exits
        if (new.debounce_s, new.debounce_max_delay_s) != (self.config.debounce_s, self.config.debounce_max_delay_s):
            pending, self.debouncer = self.debouncer.flush(), make_debouncer(new)
            now = datetime.now(timezone.utc)
            for pid in pending:
                self.debouncer.offer(pid, pid, now)
        self.engine.apply_config(new)
        self.outbox.retarget(config.signaller.signals_queue)
        self.config = new
        log.info("exits config applied live; %d position states kept", len(self.engine.states))

    def on_update(self, update: PositionUpdate) -> None:
        self.last_update = time.monotonic()
        self.stats.updates += 1
        metrics.EXIT_UPDATES.inc()
        if self.mode != "event":
            self.set_mode("event", "a position update arrived")
        pid = (update.asset, update.position_id.lower())
        self.fresh[pid] = update
        (self.open_announced.add if update.size != 0 else self.open_announced.discard)(pid)
        self.debouncer.offer(pid, pid, datetime.now(timezone.utc))

    def on_price(self, update) -> None:
        self.market.apply(update)
        self.priced.add(update.asset)
        watched = self.engine.positions_of(update.asset)
        if watched:
            now = datetime.now(timezone.utc)
            for pid in watched:
                self.debouncer.offer(pid, pid, now)

    def set_mode(self, mode: str, why: str) -> None:
        self.mode = mode
        metrics.EXIT_FALLBACK.set(1 if mode == "fallback" else 0)
        (log.warning if mode == "fallback" else log.info)("exits now %s-driven: %s", mode, why,
                                                           extra={"exit_mode": mode})
        if mode == "fallback":
            self.next_poll = 0.0

    # --- one turn ---------------------------------------------------------------------------

    def step(self) -> None:
        """One turn of msd.roles.publishing: take the inputs, then evaluate what is due."""
        drain(self.ctx.queues["positions"], self.on_update, timeout=MAX_WAIT_S)
        drain(self.ctx.queues["exit_prices"], self.on_price, timeout=0)
        self.advance()

    def may_flush(self) -> bool:
        return self.restored     # never publish before the stored states are back (module doc)

    def flush_interval_s(self) -> float:
        return OUTBOX_RETRY_S

    def advance(self) -> None:
        """Restore state once, switch event/fallback mode, evaluate debounced positions, poll."""
        mono = time.monotonic()
        if mono < self.db_retry_at:
            return
        try:
            if not self.restored:
                self.restore()
            self._check_mode(mono)
            now = datetime.now(timezone.utc)
            due = self.debouncer.due(now)
            if due:
                self.evaluate_due(due, now)
            if self.mode == "fallback" and mono >= self.next_poll:
                self.next_poll = mono + self.config.poll_interval_s
                self.poll(now)
            elif self.mode == "event" and mono >= self.next_verify:
                self.next_verify = mono + VERIFY_EVERY_S
                self.forget_closed()
            self.output.save()
        except DatabaseUnavailable as exc:
            self._database_down(exc)
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
        """Load every stored position state (once per process); damaged rows are logged and dropped."""
        apply_migrations(self.ctx.config.database.url)
        with self.db.transaction() as conn:
            rows = load_states(conn)
        states = []
        for row in rows:
            try:
                states.append(ExitState.from_dict(row.state))
            except InvalidPositionData as exc:
                self.output.skip("damaged_state", str(exc), {"asset": row.asset, "position_id": row.position_key})
        self.engine.restore(states)
        self.restored = True
        log.info("restored exit state of %d positions", len(states))

    def evaluate_due(self, due: list[PositionId], now: datetime) -> None:
        updates = {pid: self.fresh.pop(pid) for pid in due if pid in self.fresh}
        try:
            rows = self._rows_for(updates)
            for pid in due:
                update = updates.pop(pid, None)
                self._guarded(pid, update, lambda: self._from_update(pid, update, rows, now) if update is not None
                              else self._from_tick(pid, now))
        except DatabaseUnavailable:
            # What was not evaluated waits for the database; an exit already recorded is in
            # cooldown, so evaluating its position again cannot send it twice.
            self.fresh.update(updates)
            for pid in due:
                self.debouncer.offer(pid, pid, now)
            raise

    def _guarded(self, pid: PositionId, update: PositionUpdate | None, evaluate) -> None:
        """Run one position's evaluation; an unexpected error is logged and counted, the others go on."""
        try:
            evaluate()
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            self.stats.errors += 1
            self.stats.error(f"{type(exc).__name__}: {exc}")
            metrics.EXIT_ERRORS.inc()
            context = update_context(update) if update is not None else {"asset": pid[0], "position_id": pid[1]}
            log.exception("exit evaluation of position %s failed", pid[1], extra=context)

    def _rows_for(self, updates: dict[PositionId, PositionUpdate]) -> dict[str, PositionRow] | None:
        """The table rows of the updated open positions; None when the shared table is unusable."""
        ids = sorted({pid[1] for pid, u in updates.items() if u.size != 0})
        if not ids:
            return {}
        try:
            with self.db.transaction() as conn:
                return read_positions(conn, ids)
        except SharedSchemaError as exc:
            self.stats.error(str(exc))
            log.error("cannot read the positions table: %s", exc)
            return None

    def _from_update(self, pid: PositionId, update: PositionUpdate, rows, now: datetime) -> None:
        if update.size == 0:
            self.engine.close(pid)
            return
        row = None if rows is None else rows.get(pid[1])
        if row is None:
            reason = "positions_table_unusable" if rows is None else "position_not_in_table"
            self.output.skip(reason, f"no positions row for position {update.position_id}", update_context(update))
            return
        size = current_size(update, row)
        if size == 0:
            # A late or redelivered update of a position the table already shows flat: an exit
            # now would open the reverse side.
            self.engine.close(pid)
            self.output.skip("stale_update", f"position {update.position_id} is flat in the positions table",
                             update_context(update))
            return
        try:
            view = position_view(update.asset, pid[1], size, row, self.engine.known_opened_at(pid), now)
        except InvalidPositionData as exc:
            self.output.skip("incomplete_position", str(exc), update_context(update))
            return
        watched = Watched(view, table_quote(row), update.trace_id, update.update_source)
        self.engine.watch(pid, watched)
        self._evaluate(watched, now, "event", update_context(update))

    def forget_closed(self) -> None:
        """Stop watching positions the table shows flat or gone: their close event may be lost,
        and price ticks alone would keep evaluating (and exiting) a position that is no more."""
        watched = sorted(self.engine.watched)
        if not watched:
            return
        try:
            with self.db.transaction() as conn:
                rows = read_positions(conn, [pid[1] for pid in watched])
        except SharedSchemaError as exc:
            self.stats.error(str(exc))
            return
        for pid in watched:
            row = rows.get(pid[1])
            if row is None or row.size == 0:
                log.info("position %s %s is no longer open in the positions table; no longer watched",
                         pid[0], pid[1], extra={"position_id": pid[1], "asset": pid[0]})
                self.engine.close(pid)

    def _from_tick(self, pid: PositionId, now: datetime) -> None:
        watched = self.engine.watched.get(pid)
        if watched is None:     # closed since the tick was offered
            return
        self._evaluate(watched, now, "price", {"position_id": pid[1], "asset": pid[0]})

    def _evaluate(self, watched: Watched, now: datetime, trigger: str, context: dict[str, Any]) -> None:
        quote = freshest([*market_quotes(self.market.asset_state(watched.view.key.asset)), watched.row_quote])
        if quote is None:
            self.output.skip("no_price", "neither the market nor the positions table has a price", context)
            return
        self.output.evaluate(watched, quote, now, trigger)

    def poll(self, now: datetime) -> None:
        """Fallback: evaluate every open position from the table, and forget those no longer open."""
        try:
            with self.db.transaction() as conn:
                rows = read_open_positions(conn)
        except SharedSchemaError as exc:
            self.stats.error(str(exc))
            log.error("fallback poll cannot read the positions table: %s", exc)
            return
        open_ids = set()
        for row in rows:
            pid = (row.asset, row.position_id)
            open_ids.add(pid)
            context = {"position_id": row.position_id, "asset": row.asset, "trigger": "poll"}
            try:
                view = position_view(row.asset, row.position_id, row.size, row, self.engine.known_opened_at(pid), now)
            except InvalidPositionData as exc:
                self.output.skip("incomplete_position", str(exc), context)
                continue
            watched = Watched(view, table_quote(row), None, "positions_table")
            self.engine.watch(pid, watched)
            self._evaluate(watched, now, "poll", context)
        for pid in self.engine.known() - open_ids - set(self.fresh):
            self.engine.close(pid)

    # --- reporting --------------------------------------------------------------------------

    def report(self) -> None:
        s = self.stats
        degraded = {}     # the database and the broker are in `dependencies` (DependencyHealth)
        self.ctx.set_status(
            mode=self.mode, open_positions=len(self.open_announced), positions_tracked=len(self.engine.states),
            priced_assets=len(self.priced),
            updates=s.updates, evaluations=s.evaluations, exits_sent=dict(s.sent), exits_suppressed=dict(s.suppressed),
            exits_failed=dict(s.failed), invalid_updates=dict(s.invalid), evaluation_errors=s.errors,
            last_error=s.last_error, last_exit=s.last_exit, outbox_backlog=self.outbox.backlog, degraded=degraded)


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
