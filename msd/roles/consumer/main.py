"""The consumer role: RabbitMQ -> validate/normalise -> persist -> data-plane queues.

A batch of deliveries is parsed, then persisted in one transaction (executions, bars, dead
letters); only after the commit are the messages acknowledged (by the BatchConsumer) and the
valid ones forwarded to the signaller and exit roles. Invalid input is parked and acked: it
never crashes the role and never holds up the valid messages behind it.

Under a flood of junk, a rejected message costs little: the codecs refuse what cannot be a JSON
object without parsing it, the dead letters of a batch are one INSERT, and the log gets the
first few of each (source, reason) per window and then one summary line, not a line each.
"""
from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Mapping, Sequence

from msd import metrics
from msd.bus.checks import Limits
from msd.bus.codecs import parse_market_event, parse_order_event, parse_position_update, trace_id_header
from msd.bus.consumer import BatchConsumer, Delivery
from msd.values.messages import BookTop, Kline, OrderEvent, PositionUpdate, TickerUpdate, Trade
from msd.bus.topology import QueueSpec
from msd.errors import DatabaseUnavailable, InvalidMessage
from msd.logs import LineBudget
from msd.roles.consumer.subscriptions import PositionAssets, start_subscriber, strategy_assets
from msd.roles.runtime.dataplane import Backlog, Timed
from msd.roles.runtime.edges import open_database
from msd.roles.runtime.process import DependencyHealth, RoleContext
from msd.supervisor.spawn import EXIT_OK
from msd.store.db import Database
from msd.store.deadletters import (
    DeadLetter, DeadLetterBudget, purge_dead_letters, record_dead_letters, record_overflow, stored_per_source,
)
from msd.store.executions import record_order_events
from msd.store.market import upsert_bars
from msd.store.migrate import apply_migrations

log = logging.getLogger("msd.consumer")

PARSERS: Mapping[str, Callable[..., Any]] = {
    "order_events": parse_order_event, "position_updates": parse_position_update,
    "ticker": parse_market_event, "orderbook": parse_market_event,
    "trade": parse_market_event, "kline": parse_market_event,
}
WS_GATEWAY_KINDS = frozenset({"ticker", "orderbook", "trade", "kline"})
RAW_LOG_LIMIT = 16_384   # bytes of an invalid payload shown in its log line
PURGE_EVERY_S = 60.0     # dead-letter retention is enforced this often
PURGE_CHUNK = 10_000     # rows deleted per statement, so a purge never holds a long lock
# Data-plane queues whose items go as dataplane.Timed (their reader measures the signal path).
TIMED_QUEUES = frozenset({"market"})
# Stages whose failures are bugs (not bad input): an ERROR line each, within the line budget.
BUG_REASONS = frozenset({"parser_error", "store_rejected"})


@dataclass(frozen=True)
class Parsed:
    delivery: Delivery
    message: Any


@dataclass(frozen=True)
class Rejected:
    delivery: Delivery
    error: InvalidMessage


@dataclass
class Counters:
    consumed: int = 0
    invalid: int = 0
    executions: int = 0
    duplicates: int = 0
    dropped: int = 0
    not_stored: int = 0


def queue_specs(config) -> list[QueueSpec]:
    ws_mode = "ws_gateway" if config.consumer.ws_gateway_declare == "exact" else "passive"
    return [QueueSpec(name, ws_mode if kind in WS_GATEWAY_KINDS else "durable")
            for kind, name in config.consumer.queues.items()]


def classify(batch: Sequence[Delivery], kind_of_queue: Mapping[str, str],
             limits: Limits = Limits()) -> tuple[list[Parsed], list[Rejected]]:
    parsed, rejected = [], []
    for delivery in batch:
        try:
            message = PARSERS[kind_of_queue[delivery.queue]](delivery.body, delivery.headers, limits=limits)
        except InvalidMessage as exc:
            rejected.append(Rejected(delivery, exc))
        except Exception as exc:
            # A parser bug on odd input must park that message, not requeue it forever at the
            # head of the queue and block everything behind it.
            rejected.append(Rejected(delivery, InvalidMessage("parser_error", f"{type(exc).__name__}: {exc}"[:300])))
        else:
            parsed.append(Parsed(delivery, message))
    return parsed, rejected


def dead_letter(item: Rejected) -> DeadLetter:
    d = item.delivery
    return DeadLetter(d.queue, item.error.reason, item.error.detail, d.body, d.headers, trace_id_header(d.headers))


class BatchProcessor:
    """Turns one batch of deliveries into committed effects; raises DatabaseUnavailable to retry."""

    def __init__(self, ctx: RoleContext, db: Database, kind_of_queue: Mapping[str, str],
                 deps: DependencyHealth | None = None):
        self.ctx, self.db, self.kind_of_queue = ctx, db, kind_of_queue
        self.deps = deps or DependencyHealth(ctx, log)
        cfg = ctx.config.consumer
        self.limits = Limits(max_body_bytes=cfg.max_body_bytes, max_future_s=cfg.max_future_s)
        self.dead_config = cfg.dead_letters
        self.budget = DeadLetterBudget(cfg.dead_letters.max_stored_per_source)
        self.lines = LineBudget(per_window=5, window_s=10.0)
        self.counters = Counters()
        self.schema_ready = False
        self.next_purge = 0.0
        self.backlog = Backlog(ctx.queues)

    def __call__(self, batch: list[Delivery]) -> None:
        started = time.perf_counter()
        parsed, rejected = classify(batch, self.kind_of_queue, self.limits)
        decoded = time.perf_counter()
        self._ensure_schema()
        kept, overflow = self._persist_or_isolate(parsed, rejected)   # DatabaseUnavailable: retried
        self.budget.committed(kept)
        persisted = time.perf_counter()
        metrics.BATCH_SECONDS.observe(persisted - started)
        metrics.CONSUMER_STAGE_SECONDS.labels("decode").observe(decoded - started)
        metrics.CONSUMER_STAGE_SECONDS.labels("persist").observe(persisted - decoded)
        for item in rejected:
            self._count_invalid(item)
        for (source, _), n in overflow.items():
            self.counters.not_stored += n
            metrics.DEAD_LETTERS_NOT_STORED.labels(source).inc(n)
        self._forward(parsed)
        metrics.CONSUMER_STAGE_SECONDS.labels("forward").observe(time.perf_counter() - persisted)
        self.ctx.beat()
        self._publish_counters()

    def _ensure_schema(self) -> None:
        if not self.schema_ready:
            try:
                apply_migrations(self.ctx.config.database.url)
            except DatabaseUnavailable as exc:    # its own connection: say so here
                self.deps.failed("database", str(exc))
                raise
            with self.db.transaction() as conn:
                self.budget.reset(stored_per_source(conn))
            self.schema_ready = True

    def _persist_or_isolate(self, parsed: list[Parsed], rejected: list[Rejected]):
        try:
            with self.db.transaction() as conn:
                return self._persist(conn, parsed, rejected)
        except DatabaseUnavailable:
            raise
        except Exception:
            # Something in this batch is valid on the wire but refused by the database; find
            # it by committing one message at a time, so the rest are not held up behind it.
            log.exception("batch of %d refused by the database; retrying one by one", len(parsed))
            return self._persist_one_by_one(parsed, rejected)

    def _persist(self, conn, parsed: list[Parsed], rejected: list[Rejected]):
        orders = [p.message for p in parsed if isinstance(p.message, OrderEvent)]
        if orders:
            result = record_order_events(conn, orders)
            self.counters.executions += len(result.executions)
            self.counters.duplicates += result.duplicates
            metrics.EXECUTIONS_RECORDED.inc(len(result.executions))
            metrics.DUPLICATE_EVENTS.inc(result.duplicates)
        klines = [p.message for p in parsed if isinstance(p.message, Kline)]
        if klines:
            upsert_bars(conn, klines)
        kept, overflow = self.budget.split(dead_letter(item) for item in rejected)
        record_dead_letters(conn, kept, self.dead_config.max_payload_bytes)
        record_overflow(conn, overflow)
        return kept, overflow

    def _persist_one_by_one(self, parsed: list[Parsed], rejected: list[Rejected]):
        for item in list(parsed):
            try:
                with self.db.transaction() as conn:
                    self._persist(conn, [item], [])
            except DatabaseUnavailable:
                raise
            except Exception as exc:
                parsed.remove(item)
                rejected.append(Rejected(item.delivery, InvalidMessage("store_rejected",
                                                                       f"{type(exc).__name__}: {exc}"[:300])))
        with self.db.transaction() as conn:
            return self._persist(conn, [], rejected)

    def _count_invalid(self, item: Rejected) -> None:
        d, reason = item.delivery, item.error.reason
        self.counters.invalid += 1
        metrics.MESSAGES_INVALID.labels(d.queue, reason).inc()
        if reason in BUG_REASONS:
            metrics.MESSAGE_FAILURES.labels("consumer", reason).inc()
        if not self.lines.allow((d.queue, reason)):
            return
        level = logging.ERROR if reason in BUG_REASONS else logging.WARNING
        log.log(level, "invalid message dead-lettered: %s", item.error.detail, extra={
            "source_queue": d.queue, "reason": reason, "trace_id": trace_id_header(d.headers),
            "raw_payload": d.body[:RAW_LOG_LIMIT].decode("utf-8", "replace"), "payload_bytes": len(d.body)})

    def summarise_invalid(self) -> None:
        """One line per (source, reason) whose further dead letters got no line of their own."""
        for (source, reason), n in self.lines.summaries():
            log.warning("%d more invalid messages from %s dead-lettered (%s) in the last %gs without a line each",
                        n, source, reason, self.lines.window_s,
                        extra={"source_queue": source, "reason": reason, "suppressed": n})

    def maybe_purge(self) -> None:
        """Enforce consumer.dead_letters.retention_days (called from the consumer's loop)."""
        if not self.schema_ready or time.monotonic() < self.next_purge:
            return
        self.next_purge = time.monotonic() + PURGE_EVERY_S
        retention = timedelta(days=self.dead_config.retention_days)
        try:
            purged = 0
            while True:
                with self.db.transaction() as conn:
                    deleted = purge_dead_letters(conn, retention, limit=PURGE_CHUNK)
                purged += deleted
                if deleted < PURGE_CHUNK:
                    break
            if purged:
                with self.db.transaction() as conn:
                    self.budget.reset(stored_per_source(conn))
                metrics.DEAD_LETTERS_PURGED.inc(purged)
                log.info("deleted %d dead letters older than %g days", purged, self.dead_config.retention_days)
        except DatabaseUnavailable:
            pass    # reported by the Database; tried again after PURGE_EVERY_S

    def _forward(self, parsed: list[Parsed]) -> None:
        for item in parsed:
            self.counters.consumed += 1
            metrics.MESSAGES_CONSUMED.labels(item.delivery.queue).inc()
            for queue_name in destinations(item.message):
                self._put(queue_name, item.message, item.delivery.received_monotonic)

    def _put(self, queue_name: str, message: Any, received: float) -> None:
        item = Timed(message, received, time.monotonic()) if queue_name in TIMED_QUEUES else message
        if must_deliver(message):
            self.backlog.put(queue_name, item, stopping=self.ctx.stopping.is_set)
            return
        try:
            self.ctx.queues[queue_name].put_nowait(item)
        except queue.Full:
            # The reader is behind; a tick is superseded by the next one (and the exit role folds
            # each closed bar into its peaks), so dropping it is safer than blocking acks.
            self.counters.dropped += 1
            metrics.DATAPLANE_DROPPED.labels(queue_name).inc()

    def on_tick(self) -> None:
        """Every turn of the consumer loop: move waiting items on, prove liveness."""
        self.backlog.flush()
        for name, size in self.backlog.sizes().items():
            metrics.DATAPLANE_BACKLOG.labels(name).set(size)
        self.ctx.beat()

    def _publish_counters(self) -> None:
        c = self.counters
        self.ctx.set_status(consumed=c.consumed, invalid=c.invalid, executions=c.executions,
                            duplicates=c.duplicates, dropped=c.dropped, dead_letters_not_stored=c.not_stored)


def must_deliver(message: Any) -> bool:
    """Never dropped for a full queue (dataplane.Backlog): position updates and closed bars."""
    return isinstance(message, PositionUpdate) or (isinstance(message, Kline) and message.confirmed)


def destinations(message: Any) -> tuple[str, ...]:
    """Which data-plane queues a valid message goes to."""
    if isinstance(message, PositionUpdate):
        return ("positions",)
    if isinstance(message, (TickerUpdate, Trade, BookTop, Kline)):
        return ("market", "exit_prices")
    return ()


def run(ctx: RoleContext) -> int:
    cfg = ctx.config
    deps = DependencyHealth(ctx, log)
    db = open_database(cfg, "msd-consumer", deps)
    kind_of_queue = {name: kind for kind, name in cfg.consumer.queues.items()}
    processor = BatchProcessor(ctx, db, kind_of_queue, deps)

    def on_state(up: bool, reason: str | None) -> None:
        deps.reporter("broker")(up, reason)
        ctx.set_status(broker="up" if up else "down")

    subscriber = None
    positions = PositionAssets(db)

    def on_tick() -> None:
        processor.on_tick()
        processor.summarise_invalid()
        processor.maybe_purge()
        reloaded = ctx.poll_control() is not None       # a reload may change the strategies
        if subscriber is not None and (positions.refresh() or reloaded):
            subscriber.want(strategy_assets(ctx.config) | positions.assets)

    consumer = BatchConsumer(cfg.rabbitmq.url, queue_specs(cfg), processor,
                             prefetch=cfg.consumer.prefetch, max_batch=cfg.consumer.batch_max,
                             max_wait_s=cfg.consumer.batch_wait_ms / 1000.0,
                             connection_name="msd-consumer", on_state=on_state, on_tick=on_tick)
    for data_plane in ctx.queues.values():
        # On exit, items not yet taken by a reader are dropped instead of holding this process
        # until they are flushed (the readers may be gone): they are market data and position
        # updates, which the next tick and the exit role's reading of the table make good.
        data_plane.cancel_join_thread()
    ctx.booted()
    subscriber = start_subscriber(ctx, deps)
    consumer.run(ctx.stopping)
    db.close()
    return EXIT_OK
