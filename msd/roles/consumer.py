"""The consumer role: RabbitMQ -> validate/normalise -> persist -> data-plane queues.

A batch of deliveries is parsed, then persisted in one transaction (executions, bars, dead
letters); only after the commit are the messages acknowledged (by the BatchConsumer) and the
valid ones forwarded to the signaller and exit roles. Invalid input is parked and acked: it
never crashes the role and never holds up the valid messages behind it.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from msd import metrics
from msd.bus.codecs import parse_market_event, parse_order_event, parse_position_update
from msd.bus.consumer import BatchConsumer, Delivery
from msd.bus.messages import BookTop, Kline, OrderEvent, PositionUpdate, TickerUpdate, Trade
from msd.bus.topology import QueueSpec
from msd.bus.ws_gateway_api import SubscriptionFailed, subscribe_all
from msd.errors import DatabaseUnavailable, InvalidMessage
from msd.roles.dataplane import Backlog
from msd.roles.runtime import EXIT_OK, RoleContext
from msd.store.db import Database
from msd.store.deadletters import record_dead_letter
from msd.store.executions import record_order_events
from msd.store.market import upsert_bars
from msd.store.migrate import apply_migrations

log = logging.getLogger("msd.consumer")

PARSERS: Mapping[str, Callable[[bytes, Mapping], Any]] = {
    "order_events": parse_order_event, "position_updates": parse_position_update,
    "ticker": parse_market_event, "orderbook": parse_market_event,
    "trade": parse_market_event, "kline": parse_market_event,
}
WS_GATEWAY_KINDS = frozenset({"ticker", "orderbook", "trade", "kline"})
RAW_LOG_LIMIT = 16_384   # bytes of an invalid payload shown in its log line (all of it is stored)


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


def queue_specs(config) -> list[QueueSpec]:
    ws_mode = "ws_gateway" if config.consumer.ws_gateway_declare == "exact" else "passive"
    return [QueueSpec(name, ws_mode if kind in WS_GATEWAY_KINDS else "durable")
            for kind, name in config.consumer.queues.items()]


def classify(batch: Sequence[Delivery], kind_of_queue: Mapping[str, str]) -> tuple[list[Parsed], list[Rejected]]:
    parsed, rejected = [], []
    for delivery in batch:
        try:
            message = PARSERS[kind_of_queue[delivery.queue]](delivery.body, delivery.headers)
        except InvalidMessage as exc:
            rejected.append(Rejected(delivery, exc))
        except Exception as exc:
            # A parser bug on odd input (e.g. a date overflow) must park that message, not
            # requeue it forever at the head of the queue and block everything behind it.
            rejected.append(Rejected(delivery, InvalidMessage("parser_error", f"{type(exc).__name__}: {exc}"[:300])))
        else:
            parsed.append(Parsed(delivery, message))
    return parsed, rejected


def header_trace_id(delivery: Delivery) -> str | None:
    value = (delivery.headers or {}).get("trace_id")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


class BatchProcessor:
    """Turns one batch of deliveries into committed effects; raises DatabaseUnavailable to retry."""

    def __init__(self, ctx: RoleContext, db: Database, kind_of_queue: Mapping[str, str]):
        self.ctx, self.db, self.kind_of_queue = ctx, db, kind_of_queue
        self.counters = Counters()
        self.schema_ready = False
        self.backlog = Backlog(ctx.queues)

    def __call__(self, batch: list[Delivery]) -> None:
        started = time.perf_counter()
        parsed, rejected = classify(batch, self.kind_of_queue)
        try:
            self._ensure_schema()
            self._persist_or_isolate(parsed, rejected)
        except DatabaseUnavailable as exc:
            self.ctx.degrade("database", str(exc))
            metrics.DEGRADED.labels("database").set(1)
            raise
        self.ctx.recover("database")
        metrics.DEGRADED.labels("database").set(0)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        for item in rejected:
            self._log_invalid(item)
        self._forward(parsed)
        self.ctx.beat()
        self._publish_counters()

    def _ensure_schema(self) -> None:
        if not self.schema_ready:
            apply_migrations(self.ctx.config.database.url)
            self.schema_ready = True

    def _persist_or_isolate(self, parsed: list[Parsed], rejected: list[Rejected]) -> None:
        try:
            with self.db.transaction() as conn:
                self._persist(conn, parsed, rejected)
        except DatabaseUnavailable:
            raise
        except Exception:
            # Something in this batch is valid on the wire but refused by the database; find
            # it by committing one message at a time, so the rest are not held up behind it.
            log.exception("batch of %d refused by the database; retrying one by one", len(parsed))
            self._persist_one_by_one(parsed, rejected)

    def _persist(self, conn, parsed: list[Parsed], rejected: list[Rejected]) -> None:
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
        for item in rejected:
            record_dead_letter(conn, item.delivery.queue, item.error.reason, item.error.detail,
                               item.delivery.body, item.delivery.headers, header_trace_id(item.delivery))

    def _persist_one_by_one(self, parsed: list[Parsed], rejected: list[Rejected]) -> None:
        for item in list(parsed):
            try:
                with self.db.transaction() as conn:
                    self._persist(conn, [item], [])
            except DatabaseUnavailable:
                raise
            except Exception as exc:
                parsed.remove(item)
                rejected.append(Rejected(item.delivery, InvalidMessage("store_rejected", f"{type(exc).__name__}: {exc}")))
        with self.db.transaction() as conn:
            self._persist(conn, [], rejected)

    def _log_invalid(self, item: Rejected) -> None:
        d = item.delivery
        self.counters.invalid += 1
        metrics.MESSAGES_INVALID.labels(d.queue, item.error.reason).inc()
        log.warning("invalid message dead-lettered: %s", item.error.detail, extra={
            "source_queue": d.queue, "reason": item.error.reason, "trace_id": header_trace_id(d),
            "raw_payload": d.body[:RAW_LOG_LIMIT].decode("utf-8", "replace"), "payload_bytes": len(d.body)})

    def _forward(self, parsed: list[Parsed]) -> None:
        for item in parsed:
            self.counters.consumed += 1
            metrics.MESSAGES_CONSUMED.labels(item.delivery.queue).inc()
            for queue_name in destinations(item.message):
                self._put(queue_name, item.message)

    def _put(self, queue_name: str, message: Any) -> None:
        if must_deliver(message):
            self.backlog.put(queue_name, message, stopping=self.ctx.stopping.is_set)
            return
        try:
            self.ctx.queues[queue_name].put_nowait(message)
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
                            duplicates=c.duplicates, dropped=c.dropped)


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


def keep_subscribed(ctx: RoleContext) -> None:
    """Subscribe the strategies' assets at ws-gateway; on failure say so and try again later."""
    sub = ctx.config.consumer.subscriptions
    assets = {asset for strategy in ctx.config.signaller.strategies for asset in strategy.assets}
    while not ctx.stopping.is_set():
        try:
            done = subscribe_all(sub.url, sub.api_key, sub.requesting_service, assets)
        except SubscriptionFailed as exc:
            ctx.degrade("ws-gateway subscriptions", str(exc))
            log.warning("ws-gateway subscription failed, retrying in %gs: %s", sub.retry_s, exc)
            ctx.stopping.wait(sub.retry_s)
            continue
        ctx.recover("ws-gateway subscriptions")
        ctx.set_status(subscriptions=len(done))
        log.info("subscribed %d ws-gateway channels for %s", len(done), ", ".join(sorted(assets)))
        return


def run(ctx: RoleContext) -> int:
    cfg = ctx.config
    db = Database(cfg.database.url, connect_timeout=cfg.database.connect_timeout_s,
                  application_name="msd-consumer")
    kind_of_queue = {name: kind for kind, name in cfg.consumer.queues.items()}
    processor = BatchProcessor(ctx, db, kind_of_queue)

    def on_state(up: bool, reason: str | None) -> None:
        metrics.DEGRADED.labels("rabbitmq").set(0 if up else 1)
        if up:
            ctx.recover("rabbitmq")
        else:
            ctx.degrade("rabbitmq", reason or "unavailable")
            log.warning("consumer not consuming: %s", reason)
        ctx.set_status(broker="up" if up else "down")

    consumer = BatchConsumer(cfg.rabbitmq.url, queue_specs(cfg), processor,
                             prefetch=cfg.consumer.prefetch, max_batch=cfg.consumer.batch_max,
                             max_wait_s=cfg.consumer.batch_wait_ms / 1000.0,
                             connection_name="msd-consumer", on_state=on_state, on_tick=processor.on_tick)
    for data_plane in ctx.queues.values():
        # On exit, items not yet taken by a reader are dropped instead of holding this process
        # until they are flushed (the readers may be gone): they are market data and position
        # updates, which the next tick and the exit role's reading of the table make good.
        data_plane.cancel_join_thread()
    ctx.booted()
    if cfg.consumer.subscriptions.url:
        threading.Thread(target=keep_subscribed, args=(ctx,), name="subscriptions", daemon=True).start()
    consumer.run(ctx.stopping)
    db.close()
    return EXIT_OK
