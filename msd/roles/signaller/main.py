"""The signaller role: market state + strategies -> signals, published through the outbox.

Each turn: apply a live config if the supervisor sent one, drain the market queue into the
market state, then take the turn's decisions (msd.strategies.signal_turn: every strategy that is
due (schedule trigger) or whose assets just changed (market trigger)). The decisions are pure;
this module does the I/O around them: exposure from the shared tables, the random streams'
restore and save, the outbox, mode bookkeeping, status and metrics.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime
from decimal import Decimal
from typing import Any

from msd import metrics
from msd.bus.publisher import ConfirmingPublisher
from msd.config import Config
from msd.errors import DatabaseUnavailable, MsdError
from msd.logs import LineBudget
from msd.market.state import MarketState, Unavailable
from msd.values.clock import Clock, utc_now
from msd.roles.runtime.dataplane import Timed, drain
from msd.roles.runtime.outbox import AfterExpiry, Expiry, Outbox, Submission
from msd.roles.runtime.publishing import serve_publishing_role
from msd.roles.signaller import path_timing
from msd.roles.signaller.path_timing import Arrival, DecisionTimes
from msd.roles.signaller.random_streams import RandomStreams
from msd.roles.runtime.process import DependencyHealth, RoleContext
from msd.store.db import Database
from msd.roles.signaller.exposure import exposure_and_in_flight
from msd.roles.signaller.learning_loop import LearningLoop
from msd.roles.signaller.model_book import ModelBook, sync_modes
from msd.strategies import engine, signal_turn, step
from msd.strategies.emit import warmup_parameters
from msd.strategies.in_flight import IN_FLIGHT_S, InFlightSignal, InFlightSignals
from msd.strategies.params import StrategyParams
from msd.strategies.warmup import ExposureUnknown, exposure_usdt

log = logging.getLogger("msd.signaller")
MODELS_RETRY_S = 2.0
EXPIRING_MODES = ("warmup", "model")
RESEED_AFTER_FAILED_WRITE_S = 15.0   # msd.store.db's statement timeout (10 s) and a margin


def expiry(config: Config, after_commit: AfterExpiry | None = None) -> Expiry:
    """Warm-up and model decisions older than signaller.max_signal_age_s are not sent late."""
    return Expiry(modes=EXPIRING_MODES, max_age_s=config.signaller.max_signal_age_s, after_commit=after_commit)


class StrategyStats:
    def __init__(self) -> None:
        self.decisions = 0          # evaluations on an asset, whatever they decided
        self.decisions_exported = 0  # of them, added to msd_strategy_decisions_total so far
        self.sent = 0
        self.dropped: Counter[str] = Counter()
        self.last_signal_at: str | None = None
        self.degraded: str | None = None

    def view(self, mode: str) -> dict[str, Any]:
        throttled = sum(n for r, n in self.dropped.items() if r.startswith("throttled"))
        suppressed = sum(n for r, n in self.dropped.items() if r.startswith("conflict"))
        return {"mode": mode, "decisions": self.decisions, "sent": self.sent, "throttled": throttled,
                "suppressed": suppressed,
                "dropped": dict(self.dropped), "last_signal_at": self.last_signal_at, "degraded": self.degraded}


class Signaller:
    """`clock` is read once per entry from the loop (step, apply_config, report) and the time
    passed in as `now`: nothing on a decision path reads the wall clock."""

    def __init__(self, ctx: RoleContext, db: Database, outbox: Outbox, deps: DependencyHealth | None = None,
                 clock: Clock = utc_now):
        self.ctx, self.db, self.outbox, self.clock = ctx, db, outbox, clock
        self.deps = deps or DependencyHealth(ctx, log)
        self.lines = LineBudget(per_window=3, window_s=30.0)
        self.market = MarketState()
        self.dirty: set[str] = set()
        self.seen: set[str] = set()        # every asset with market data, for status
        self.updates = 0
        self.updates_by_asset: Counter[str] = Counter()
        self.coalesced: Counter[str] = Counter()    # updates merged into a newer one before a turn
        self.arrivals: dict[str, Arrival] = {}      # of each asset's newest update, for path_timing
        self.book = ModelBook(db, lambda: self.config.trainer.training)
        self.learning = LearningLoop(ctx, db, self.book, self.refresh_models)
        self.stats: dict[str, StrategyStats] = {}
        self.streams = RandomStreams(db)
        self.emitted: list[tuple] = []     # this turn's signals, written together (submit_emitted)
        # Market-triggered signals sent, their confirm not heard yet: their path timing (confirmed)
        self.awaiting: dict[str, tuple[Arrival, DecisionTimes, float, float]] = {}
        self.outbox.attach(self.confirmed, clock)
        self.exposure_cache: dict[str, Decimal | ExposureUnknown] = {}
        self.in_flight = InFlightSignals(IN_FLIGHT_S)   # sent, no order row yet (msd.strategies.in_flight)
        self.reseed_until = 0.0     # time.monotonic(): until then every exposure read seeds in_flight again
        self.config: Config = ctx.config
        # the strategies' runtimes, the shared limits' state, the schedule attempts
        self.turn = signal_turn.TurnState({}, engine.start_shared(self.config.signaller.limits))
        self.models_loaded = False
        self.models_retry_at = 0.0
        self.apply_config(self.config, initial=True)

    # ----- configuration --------------------------------------------------------------
    def apply_config(self, config: Config, initial: bool = False) -> None:
        now = self.clock()
        self.config = config
        strategies = {p.id: p for p in config.signaller.strategies}
        for sid in strategies:
            self.stats.setdefault(sid, StrategyStats())
        self.turn = signal_turn.configure(self.turn, config.signaller.strategies, config.signaller.limits, now)
        self.streams.configure(strategies.values())
        self.outbox.retarget(config.signaller.signals_queue)
        self.outbox.retune(expiry(config, self.signals_expired))
        metrics.MODEL_QUALITY_THRESHOLD.set(config.trainer.quality.threshold)
        self.refresh_models("configuration applied")
        if not initial:
            log.info("signaller config applied live: %d strategies, global rate %s/s burst %d",
                     len(strategies), config.signaller.global_rate.rate_per_s, config.signaller.global_rate.burst)

    def refresh_models(self, why: str) -> None:
        """Load the active versions and audit the modes; retried each turn while the DB is down."""
        strategies = self.config.signaller.strategies
        try:
            changes = self.book.reload(p.id for p in strategies)
            sync_modes(self.db, self.book, strategies, warmup_parameters, self.clock())
        except DatabaseUnavailable as exc:
            # The database being down is said once by DependencyHealth; this only says what it costs.
            (log.warning if self.models_loaded is not False else log.debug)(
                "active models not loaded (retried every %gs): %s", MODELS_RETRY_S, exc)
            self.models_loaded = False
            return
        self.models_loaded = True
        for params in strategies:
            if params.id not in self.book.paused:
                self.ctx.recover(f"warm-up paused {params.id}")
        for sid, (old, new) in changes.items():
            log.info("strategy %s switched from %s to %s (%s)", sid, f"v{old}" if old else "warm-up",
                     f"v{new}" if new else "warm-up", why, extra={"strategy": sid})

    # ----- inputs ---------------------------------------------------------------------
    def on_market(self, item: Timed) -> None:
        update = item.item
        try:
            self.market.apply(update)
        except Exception as exc:   # one odd update must not stop the others (nor the role)
            self.failed("market_update", exc, {"asset": getattr(update, "asset", None),
                                               "trace_id": getattr(update, "trace_id", None)})
            return
        if update.asset in self.dirty:
            # Decided on together with the newer one in the next turn: counted, never lost.
            self.coalesced[update.asset] += 1
            metrics.MARKET_COALESCED.inc()
        self.dirty.add(update.asset)
        self.seen.add(update.asset)
        self.updates += 1
        self.updates_by_asset[update.asset] += 1
        self.arrivals[update.asset] = Arrival(item.received, item.forwarded, time.monotonic())

    def failed(self, stage: str, exc: Exception, context: dict[str, Any]) -> None:
        """A per-input failure: counted, logged (within a line budget), skipped."""
        metrics.MESSAGE_FAILURES.labels("signaller", stage).inc()
        if self.lines.allow(stage):
            log.error("%s failed and was skipped: %s: %s", stage, type(exc).__name__, exc, exc_info=exc,
                      extra={"stage": stage, **context})

    def exposure(self, asset: str, sid: str, market_price: Decimal, now: datetime) -> Decimal | ExposureUnknown:
        if asset not in self.exposure_cache:
            try:
                self.exposure_cache[asset] = self.read_exposure(asset, market_price, now)
            except DatabaseUnavailable as exc:
                self.in_flight.forget()     # a write whose commit was lost may have landed: seed again
                self.exposure_cache[asset] = ExposureUnknown(str(exc))
            except MsdError as exc:         # the shared tables unusable: nothing says a write landed
                self.exposure_cache[asset] = ExposureUnknown(str(exc))
        value = self.exposure_cache[asset]
        self.set_degraded(sid, value.why if isinstance(value, ExposureUnknown) else None)
        return value

    def read_exposure(self, asset: str, market_price: Decimal, now: datetime) -> Decimal:
        if time.monotonic() < self.reseed_until:
            self.in_flight.forget()     # a failed write may still commit on the server: look again
        with self.db.autocommit() as conn:
            shared, in_flight = exposure_and_in_flight(conn, asset, self.in_flight, now)
        return exposure_usdt(shared, market_price) + in_flight

    def signals_expired(self, expired) -> None:
        """Signals the outbox expired unsent no longer count toward exposure."""
        for signal in expired:
            self.in_flight.settle(signal.asset, (signal.signal_id,))

    def set_degraded(self, sid: str, why: str | None) -> None:
        stats = self.stats[sid]
        if why != stats.degraded:
            if why:
                log.warning("strategy %s degraded: exposure unknown, no signals for now: %s", sid, why)
            else:
                log.info("strategy %s no longer degraded", sid)
            stats.degraded = why

    # ----- evaluation -----------------------------------------------------------------
    def tick(self, now: datetime) -> None:
        self.exposure_cache.clear()
        dirty, self.dirty = self.dirty, set()
        try:
            self._evaluate_due(dirty, now)
        finally:
            self.submit_emitted()
        for stage, n in self.lines.summaries():
            log.error("%d more %s failures in the last %gs", n, stage, self.lines.window_s,
                      extra={"stage": stage, "suppressed": n})

    def _evaluate_due(self, dirty: set[str], now: datetime) -> None:
        """The turn's decisions (msd.strategies.signal_turn), then what they say to do."""
        reads: dict[tuple[str, str], tuple[float, float]] = {}   # for the signal path's timing only
        turned = signal_turn.step(self.turn, signal_turn.Turn(dirty), now, self._turn_inputs(now, reads))
        decided = time.monotonic()
        self.turn = turned.state
        unavailable = None
        for effect in turned.effects:
            self.stats[effect.params.id].decisions += 1      # exported once a second (report): the hot loop
            if isinstance(effect, signal_turn.Emitted):
                started, read = reads[(effect.params.id, effect.signal.asset)]
                timing = DecisionTimes(started, read - started, decided - read)
                self.emitted.append((effect.params, effect.signal, effect.mode, timing, now))
            elif isinstance(effect, signal_turn.Failed) and isinstance(effect.error, DatabaseUnavailable):
                unavailable = unavailable or effect.error
            else:
                self._count(effect)
            if isinstance(effect, (signal_turn.Dropped, signal_turn.Emitted)) and effect.drew:
                self.streams.drew(effect.params.id)     # saved within a second (streams.save)
        if unavailable is not None:
            raise unavailable       # the loop's dependency handling; this turn's signals still go out

    def _count(self, effect: signal_turn.Effect) -> None:
        if isinstance(effect, signal_turn.Dropped):
            self.stats[effect.params.id].dropped[effect.reason] += 1
            metrics.SIGNALS_DROPPED.labels(effect.params.id, effect.reason).inc()
        elif isinstance(effect, signal_turn.Failed):
            self.failed("evaluation", effect.error, {"strategy": effect.params.id, "asset": effect.asset})

    def _turn_inputs(self, now: datetime, reads: dict) -> signal_turn.TurnInputs:
        """What the turn asks for: snapshots, exposure reads (timed for the signal path: from the
        snapshot to the end of the read), the random streams once restored, the model plans."""
        config, snapped = self.config.signaller, [0.0]

        def snapshot(asset: str):
            snapped[0] = time.monotonic()
            return self.market.snapshot(asset, now, config.max_data_age_s)

        def exposure(sid: str, asset: str, price: Decimal):
            value = self.exposure(asset, sid, price, now)
            reads[(sid, asset)] = (snapped[0], time.monotonic())
            return value

        def planner(params: StrategyParams):
            return self.model_planner(params, now) if self.book.mode(params.id) == "model" else None
        return signal_turn.TurnInputs(config.strategies, config.limits, self.book.paused, snapshot, exposure,
                                      lambda sid: self.streams.rng(sid) if self.streams.ready(sid) else None, planner)

    def model_planner(self, params: StrategyParams, now: datetime):
        return step.model_planner(params, lambda snapshot: self.book.call(params.id, snapshot.to_wire(), now),
                                  self.config.trainer.training.confidence_threshold, now)

    def submit_emitted(self) -> None:
        """Write this turn's signals to the outbox in one statement, then publish them in order."""
        emitted, self.emitted = self.emitted, []
        if not emitted:
            return
        submissions = [Submission(signal, mode) for _, signal, mode, _, _ in emitted]
        for (params, signal, _, timing, now), submitted in zip(emitted, self.outbox.submit_all(submissions)):
            self.submitted(params, signal, timing, now, submitted)

    def submitted(self, params: StrategyParams, signal, timing: DecisionTimes, now: datetime, submitted) -> None:
        stats = self.stats[params.id]
        if not submitted.recorded:
            stats.dropped["not_recorded"] += 1
            # The failed write's statement may still commit on the server (its connection gone,
            # within the statement timeout): until then each exposure read seeds afresh.
            self.reseed_until = time.monotonic() + RESEED_AFTER_FAILED_WRITE_S
            return
        if submitted.dispatched and params.trigger == "market" and signal.asset in self.arrivals:
            self.awaiting[signal.signal_id] = (self.arrivals[signal.asset], timing, submitted.write_s,
                                               submitted.written_at)
        self.in_flight.add(InFlightSignal.of(signal))
        stats.sent += 1
        stats.last_signal_at = now.isoformat()
        log.info("signal %s %s %s USDT (%s, confidence %.2f)", signal.signal_type, signal.asset,
                 signal.amount, params.id, signal.confidence,
                 extra={"trace_id": signal.trace_id, "signal_id": signal.signal_id, "strategy": params.id,
                        "dispatched": submitted.dispatched})

    def confirmed(self, signal_id: str, confirmed_at: float | None) -> None:
        """The broker's verdict on a sent signal: a confirmed market-triggered one is timed from the
        update's delivery to its confirm (publish_confirm: from the committed outbox row to the
        confirm's arrival, while the loop went on); a refused or lost one goes out again later, untimed."""
        waited = self.awaiting.pop(signal_id, None)
        if waited is not None and confirmed_at is not None:
            arrival, timing, write_s, written_at = waited
            path_timing.observe(arrival, timing, write_s, confirmed_at - written_at, confirmed_at)

    # ----- the loop (msd.roles.runtime.publishing) -------------------------------------------------
    def step(self) -> None:
        notices = self.ctx.take_notices()
        changed = [d.get("reason", "models changed") for kind, d in notices if kind == "models_changed"]
        if changed or (not self.models_loaded and time.monotonic() >= self.models_retry_at):
            self.models_retry_at = time.monotonic() + MODELS_RETRY_S
            self.refresh_models(changed[-1] if changed else "start-up")
        drain(self.ctx.queues["market"], self.on_market, timeout=0.05)
        now = self.clock()
        self.tick(now)
        self.learning.maybe_check(self.config, now)
        self.streams.save()     # the streams that drew, at most once a second

    def may_flush(self) -> bool:
        return True

    def at_stop(self) -> None:
        self.streams.save(force=True)       # a clean stop replays no draw

    def flush_interval_s(self) -> float:
        return self.config.signaller.republish_interval_s

    # ----- reporting ------------------------------------------------------------------
    def _strategy_view(self, sid: str) -> dict[str, Any]:
        view = self.stats[sid].view(self.book.mode(sid))
        view["model_version"] = self.book.version(sid)
        if sid in self.book.refused:
            view["model_refused"] = self.book.refused[sid]
        if sid in self.book.paused:
            view["paused"] = f"{self.book.paused[sid].cause}: {self.book.paused[sid].reason}"
        return view

    def report(self) -> None:
        now = self.clock()
        for sid, stats in self.stats.items():
            if stats.decisions > stats.decisions_exported:
                metrics.STRATEGY_DECISIONS.labels(sid).inc(stats.decisions - stats.decisions_exported)
                stats.decisions_exported = stats.decisions
        assets = {}
        for asset in sorted({a for p in self.config.signaller.strategies for a in p.assets} | self.seen):
            snap = self.market.snapshot(asset, now, self.config.signaller.max_data_age_s)
            assets[asset] = snap.reason if isinstance(snap, Unavailable) else f"{snap.price} ({snap.age_seconds:.1f}s)"
        # The database and the broker are in `dependencies` (DependencyHealth), not here.
        degraded = {f"strategy {sid}": s.degraded for sid, s in self.stats.items()
                    if s.degraded and sid in self.turn.runtimes}
        degraded.update({f"model {sid}": why for sid, why in self.book.refused.items()})
        degraded.update({k: v for k, v in (self.ctx.status().get("degraded") or {}).items()
                         if k.startswith(("model quality", "warm-up paused"))})
        self.ctx.set_status(
            market_updates=self.updates, market_updates_by_asset=dict(self.updates_by_asset),
            coalesced=sum(self.coalesced.values()), coalesced_by_asset=dict(self.coalesced), assets=assets,
            max_data_age_s=self.config.signaller.max_data_age_s,
            strategies={sid: self._strategy_view(sid) for sid in self.turn.runtimes}, learning=self.learning.view,
            published=self.outbox.published, expired=self.outbox.expired, unconfirmed=self.outbox.unconfirmed,
            outbox_backlog=self.outbox.backlog,
            random_draws=dict(self.streams.draws), degraded=degraded)


def run(ctx: RoleContext) -> int:
    def make(db: Database, publisher: ConfirmingPublisher, deps: DependencyHealth) -> Signaller:
        outbox = Outbox(db, publisher, ctx.config.signaller.signals_queue, modes=EXPIRING_MODES,
                        expiry=expiry(ctx.config))
        return Signaller(ctx, db, outbox, deps)
    return serve_publishing_role(ctx, make)
