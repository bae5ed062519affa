"""The exit role: position updates + prices -> exit rules -> exit signals (DESIGN.md §7).

Every position's state lives in `self.book`, one `ExitState` per (asset, position id); what is
observed changes it through msd.strategies.exit_step, the pure step the backtest calls too
(rows read, prices, decisions, exits in flight); this module and its parts do the I/O around
it (and restore stored states). Time is `self.clock`, the wall clock unless one is injected:
the step reads none. Each turn: apply a live `exits` config, take position updates (each asks
for its row to be re-read) and market updates (each price is folded into the peak of its
asset's positions as it arrives), then decide for the positions the debouncer releases (made by
msd.strategies.exit_step.debouncer, as the backtest's). Only the decision is debounced.

The `positions` row is the source of truth for size, side, asset and mode (CONTRACTS §3.5): an
event only triggers a re-read of the row its `position_id` names. A position is keyed by that
row's id and the row's asset; the event's asset, size and mode are never used (an event can be
older than the row, or wrong), so a bogus event cannot move another position's state, close it
or reset it. An exit is in flight until a newer row shows it or its own order ended
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
from datetime import datetime, timezone
from typing import Any, Callable

from msd import metrics
from msd.values.messages import PositionUpdate
from msd.bus.publisher import ConfirmingPublisher
from msd.errors import DatabaseUnavailable
from msd.market.state import MarketState
from msd.roles.runtime.dataplane import drain
from msd.roles.exits.expiry import EXIT_MODES, ExpiredExits
from msd.roles.exits.report import ExitStats, report_status
from msd.roles.exits.positions import PositionReading
from msd.roles.exits.sending import ExitSending
from msd.strategies.exit_step import VERIFY_EVERY_S, debouncer, price_event, step as exit_step
from msd.roles.exits.tables import SharedTables
from msd.roles.exits.voiding import VoidedExits
from msd.roles.runtime.outbox import Outbox
from msd.roles.runtime.publishing import serve_publishing_role
from msd.roles.runtime.process import DependencyHealth, RoleContext
from msd.rules import (
    Debouncer, ExitState, InvalidPositionData,
)
from msd.store.db import Database, retry_backoff
from msd.store.exit_state import delete_states, load_states, save_states
from msd.store.migrate import apply_migrations
from msd.values.bucket import BucketState

log = logging.getLogger("msd.exits")
MAX_WAIT_S = 0.01           # longest wait on the positions queue per turn
OUTBOX_RETRY_S = 1.0
IN_FLIGHT_CHECK_S = 0.25    # exits in flight: their orders and rows are looked up this often
SAVE_EVERY_S = 0.25         # peaks moved by ticks are written at most this often (decisions at once)

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


class ExitRole(PositionReading, ExitSending, ExpiredExits, VoidedExits):
    """The role's state and its turn; reading the table is PositionReading (positions.py),
    deciding and sending ExitSending (sending.py), exits that expired unsent ExpiredExits (expiry.py),
    pending exits whose position changed before they went out VoidedExits (voiding.py)."""

    def __init__(self, ctx: RoleContext, db: Database, outbox: Outbox, deps: DependencyHealth | None = None,
                 clock: Callable[[], datetime] = utc_now):
        self.ctx, self.db, self.outbox = ctx, db, outbox
        outbox.attach(self.confirmed, clock)                 # a confirm frees the in-flight check's lookup
        self.clock = clock                                   # every `now` of the role (the step reads none)
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
        self.ids: dict[str, PositionId] = {}                 # row id -> the book's key (asset from the row)
        self.reread: set[PositionId] = set()                 # an event came: read the row before deciding
        self.unknown: dict[str, datetime] = {}               # events of rows not in the book: read this turn
        self.context: dict[str, PositionUpdate] = {}         # by row id: the last event, for logs and signals
        self.unsure: dict[PositionId, str] = {}              # exits whose outbox write may have committed
        self.holding: dict[PositionId, str] = {}             # why a fired rule sends nothing now (counted once)
        self.refused: dict[PositionId, tuple[str, str]] = {}  # left alone: (reason, detail)
        self.skipped: set[tuple] = set()                     # (position, reason, row version) already said
        self.tables = SharedTables(db, self.contained, self.stats.error)
        self.buckets: dict[str, BucketState] = {}                # exit signals per asset
        self.debouncer: Debouncer = debouncer(self.config)
        self.mode = "event"
        self.last_update = time.monotonic()
        self.next_verify = self.next_flight_check = self.next_old_flight_check = self.next_save = 0.0
        self.to_verify: deque[PositionId] = deque()
        self.restored = False
        self.db_failures, self.db_retry_at, self.db_error = 0, 0.0, None
        self.outbox.retune(self.expiry(self.config))
        self.outbox.screen_with(self.screen())

    # --- the book -----------------------------------------------------------------------------

    def put(self, pid: PositionId, state: ExitState | None) -> None:
        """Keep a position's new state (None: it is flat) and remember to save it."""
        old = self.book.get(pid)
        if state is None:
            if old is not None or pid in self.unverified:
                self.gone.add(pid)
            self.book.pop(pid, None)
            if self.ids.get(pid[1]) == pid:
                del self.ids[pid[1]]
            self.context.pop(pid[1], None)
            self.unsure.pop(pid, None)
            self.holding.pop(pid, None)
            self.skipped = {key for key in self.skipped if key[0] != pid} if self.skipped else self.skipped
            self.dirty.discard(pid)
            self.by_asset.get(pid[0], set()).discard(pid)
            self.unverified.discard(pid)
            return
        if state is not old:
            self.book[pid] = state
            self.dirty.add(pid)
            self.gone.discard(pid)
            self.by_asset.setdefault(pid[0], set()).add(pid)
            self.ids[pid[1]] = pid

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
            pending, self.debouncer = self.debouncer.flush(), debouncer(new)
            for pid in pending:
                self.debouncer.offer(pid, pid, self.clock())
        if new.asset_rate != self.config.asset_rate:
            self.buckets.clear()    # carrying tokens over from a different rate would be a guess
        self.outbox.retarget(config.signaller.signals_queue)
        self.outbox.retune(self.expiry(new))
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
        """An event only says "read row `position_id` again" (module doc)."""
        position_id = canonical_id(update.position_id)
        now = self.clock()
        self.context[position_id] = update
        pid = self.ids.get(position_id)
        if pid is None:
            self.unknown.setdefault(position_id, now)
            return
        if update.asset != pid[0]:
            self.skip("event_asset_mismatch", f"update names asset {update.asset!r} but positions row {position_id} "
                                              f"is {pid[0]}: the row is read, the event's asset is not used",
                      update_context(update))
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
        event = price_event(update, self.market)
        if event is None:
            return
        now = self.clock()
        for pid in list(watched):
            self.put(pid, exit_step(self.book[pid], event, now).state)   # a tick from before the open is left out
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
        if key not in self.skipped or pid[1] in self.context:
            self.skipped.add(key)
            self.skip(reason, detail, self.event_context(pid))
            self.context.pop(pid[1], None)

    def event_context(self, pid: PositionId) -> dict[str, Any]:
        event = self.context.get(pid[1])
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

    def at_stop(self) -> None:
        self.save(now=True)                 # the peaks moved since the last save

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
            now = self.clock()
            if self.unknown:
                self.read_unknown(now)
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
        self.verify(self.clock())

    # --- reporting ----------------------------------------------------------------------------

    def report(self) -> None:
        try:
            report_status(self, self.clock())
        except Exception:  # a status line must never take the role down
            log.exception("exit status report failed")


def run(ctx: RoleContext) -> int:
    def make(db: Database, publisher: ConfirmingPublisher, deps: DependencyHealth) -> ExitRole:
        # The role sets the outbox's expiry itself (ExpiredExits): its hooks are the role's.
        return ExitRole(ctx, db, Outbox(db, publisher, ctx.config.signaller.signals_queue, modes=EXIT_MODES), deps)
    return serve_publishing_role(ctx, make)
