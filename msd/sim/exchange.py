"""The paper exchange's edge: the order-manager and position-manager stand-ins against the DB.

`PaperExchange` applies the pure decisions of `order_manager`/`position_manager` to the shared
tables and returns the messages to publish; it never touches the broker itself, so the loop in
`msd.sim.runner` decides when they go out (after the DB commit, as the neighbours do).
Time is sim time: every row and event carries the market's clock, never the wall clock.

The exchange's own position per asset (`_held`) is what Bybit enforces a reduce-only order
against; the `positions` row is position-manager's view of it, written after each fill — or
later, while `SimControls.position_manager_down` is set (fills then wait and are applied in
order when it is cleared), which is when an order-manager that asks position-manager sends a
plain order and reverses a position (CONTRACTS §3.6).
"""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Mapping

from msd.exchange.orders import reduce_only_cap
from msd.sim import order_manager as om
from msd.sim.market import AssetSpec, AssetTick, Quote
from msd.sim.outbound import Outbound, new_uuid
from msd.sim.position_manager import apply_fill, apply_websocket, mark, position_event, state_from_row
from msd.sim.signals import Refused, Signal, read_signal, rejection_market_conditions, signal_block
from msd.store import shared_writes as store
from msd.store.db import Database

log = logging.getLogger("msd.sim")

# How a signal delivery is settled, mirroring order-manager (CONTRACTS.md §1.3).
ACK, DROP, RETRY = "ack", "drop", "retry"


POSITION_PATHS = ("order_execution", "websocket")


class SimControls:
    """Levers on the paper exchange for tests and demos, safe to pull from another thread."""

    def __init__(self) -> None:
        self.position_manager_down = threading.Event()   # set: positions rows and events stop
        self._lock = threading.Lock()
        self._rejections = 0

    def reject_next(self, count: int = 1) -> None:
        """order-manager rejects the next `count` signals (a Bybit error: rejected row + event)."""
        with self._lock:
            self._rejections += count

    def take_rejection(self) -> bool:
        with self._lock:
            if self._rejections <= 0:
                return False
            self._rejections -= 1
            return True


@dataclass(frozen=True)
class _PendingFill:
    asset: str
    side: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    held_after: Decimal          # the exchange's position after this fill (the websocket path's size)


@dataclass(frozen=True)
class Settlement:
    settle: str                       # ACK, DROP (nack without requeue) or RETRY (requeue)
    messages: tuple[Outbound, ...] = ()


class PaperExchange:
    def __init__(self, db: Database, specs: Mapping[str, AssetSpec], params: om.OrderManagerParams,
                 rng: random.Random, position_update_s: float, *, position_path: str = "order_execution",
                 controls: SimControls | None = None):
        if position_path not in POSITION_PATHS:
            raise ValueError(f"position_path: {position_path!r} is invalid; expected one of {', '.join(POSITION_PATHS)}")
        self._position_path = position_path
        self._controls = controls or SimControls()
        self._held: dict[str, Decimal] = {}             # the exchange's own position per asset
        self._reduce_only: set[str] = set()             # working orders sent reduceOnly
        self._pm_backlog: list[_PendingFill] = []       # fills position-manager has not applied yet
        self._db = db
        self._specs = dict(specs)
        self._params = params
        self._rng = rng
        self._position_update = timedelta(seconds=position_update_s)
        self._quotes: dict[str, Quote] = {}
        self._now: datetime | None = None
        self._last_marks: datetime | None = None
        self._working: dict[str, dict[str, Any]] = {}   # open orders by primary key: latest row

    def resume(self) -> int:
        """Write the instrument rows, pick up orders left working by a previous run and the
        positions; returns how many orders."""
        with self._db.transaction() as conn:
            store.ensure_instruments(conn, [(symbol, spec.lot, spec.lot, self._params.min_order_value_usdt,
                                             spec.price_tick) for symbol, spec in self._specs.items()])
            rows = store.open_orders(conn)
            self._held = {row["asset"]: row["size"] for row in store.open_position_rows(conn)}
        self._working = {str(row["id"]): row for row in rows}
        return len(rows)

    # -- signals -------------------------------------------------------------------------------

    def handle_signal(self, body: bytes, headers: Mapping[str, Any]) -> Settlement:
        """One delivery of model-service.trading_signals; DB effects are committed on return."""
        signal = read_signal(body, headers, self._rng)
        if isinstance(signal, Refused):
            log.warning("signal dropped (nack): %s", signal.reason)
            return Settlement(DROP)
        if self._now is None or signal.asset in self._specs and signal.asset not in self._quotes:
            return Settlement(RETRY)   # no market yet: order-manager would not have a price either
        with self._db.transaction() as conn:
            status = store.linked_order_status(conn, signal.signal_id)
            if status is not None and status not in om.RETRYABLE_STATUSES:
                log.info("signal %s is a duplicate (order %s): ignored", signal.signal_id, status)
                return Settlement(ACK)
            if signal.asset not in self._specs:
                return self._reject(conn, signal, f"Order execution failed: unknown symbol {signal.asset}",
                                    DROP, "Market", self._fallback_quantity(signal), None)
            if self._controls.take_rejection():
                return self._reject(conn, signal, "Order execution failed: Bybit API error 10001: "
                                    "rejected by the msd-sim control", DROP, "Market",
                                    self._fallback_quantity(signal), None)
            plan = om.plan_order(signal, self._specs[signal.asset], self._quotes[signal.asset],
                                 self._exposure(conn, signal.asset), self._params,
                                 self._instrument(conn, signal.asset))
            if plan.rejection_reason is not None:
                return self._reject(conn, signal, plan.rejection_reason, ACK, plan.order_type,
                                    plan.quantity, plan.price)
            messages = self._cancel_older(conn, signal.asset)
            row = store.insert_order(
                conn, order_id=new_uuid(self._rng), signal_id=signal.signal_id, asset=signal.asset,
                side=plan.side, order_type=plan.order_type, quantity=plan.quantity, price=plan.price,
                status="pending", trace_id=signal.trace_id, rejection_reason=None, now=self._now)
        self._working[str(row["id"])] = row
        if plan.reduce_only:
            self._reduce_only.add(str(row["id"]))
        log.info("accepted %s %s %s %s%s%s (signal %s)", signal.asset, plan.side, plan.quantity,
                 plan.order_type, f" @ {plan.price}" if plan.price else "",
                 " reduceOnly" if plan.reduce_only else "", signal.signal_id)
        if plan.order_type == "Market":
            # Bybit fills a market order within milliseconds, before any later signal can
            # cancel it; filling it at once keeps that order of events.
            messages += self._work_order(str(row["id"]))
        return Settlement(ACK, tuple(messages))

    def _instrument(self, conn, asset: str) -> om.InstrumentRules:
        row = store.instrument_row(conn, asset)
        if row is None:
            return om.DEFAULT_INSTRUMENT
        return om.InstrumentRules(row["lot_size"], row["min_order_qty"], row["min_order_value"])

    def _held_size(self, asset: str) -> Decimal:
        if asset not in self._held:
            with self._db.transaction() as conn:
                row = store.position_row(conn, asset)
            self._held[asset] = row["size"] if row else Decimal(0)
        return self._held[asset]

    def _fallback_quantity(self, signal: Signal) -> Decimal:
        return max(om.EIGHT_PLACES, (signal.amount / signal.price).quantize(om.EIGHT_PLACES))

    def _reject(self, conn, signal: Signal, reason: str, settle: str, order_type: str,
                quantity: Decimal, price: Decimal | None) -> Settlement:
        row = store.insert_order(
            conn, order_id=f"REJECTED-{signal.signal_id}", signal_id=signal.signal_id,
            asset=signal.asset, side=signal.side, order_type=order_type, quantity=quantity,
            price=price, status="rejected", trace_id=signal.trace_id, rejection_reason=reason,
            now=self._now)
        extra = {"rejection_reason": reason, "market_conditions": rejection_market_conditions(signal),
                 "signal": signal_block(signal)}
        event = om.order_event(row, "rejected", trace_id=signal.trace_id, now=self._now,
                               rng=self._rng, extra=extra)
        log.info("rejected %s %s %s: %s (signal %s)", signal.asset, signal.side, quantity, reason,
                 signal.signal_id)
        return Settlement(settle, (event,))

    def _exposure(self, conn, asset: str) -> om.AccountExposure:
        size, total = Decimal(0), Decimal(0)
        for row in store.open_position_rows(conn):
            total += abs(row["size"]) * (row["current_price"] or row["average_entry_price"])
            if row["asset"] == asset:
                size = row["size"]
        return om.AccountExposure(size, total)

    def _cancel_older(self, conn, asset: str) -> list[Outbound]:
        """order-manager cancels older pending orders when a new signal arrives (CONTRACTS §2.3
        `cancel_order`); that it cancels the same asset's, after the new signal's risk check, is
        msd-sim's assumption (CONTRACTS names the cancel, not its scope)."""
        return [self._cancel(conn, key) for key, row in list(self._working.items()) if row["asset"] == asset]

    def _cancel(self, conn, key: str) -> Outbound:
        before = self._working[key]
        after = store.cancel_order(conn, key, self._now)
        # Forgotten only once the update is in: a failed transaction leaves the order working.
        self._working.pop(key)
        self._reduce_only.discard(key)
        log.info("cancelled %s %s %s, %s filled", after["asset"], after["side"], after["quantity"],
                 after["filled_quantity"])
        return om.order_event(after, "cancelled", trace_id=after["trace_id"] or new_uuid(self._rng),
                              now=self._now, rng=self._rng, extra=om.modification(before, after))

    def _exchange_cancel(self, key: str) -> list[Outbound]:
        """The exchange cancels a working order (a reduce-only order with nothing left to reduce, or
        a Limit past a time to live a test set): order-manager learns it from ws-gateway's order stream
        (CONTRACTS §2.3, exchange-driven row). `Cancelled` becomes status `cancelled` and a
        `cancelled` event with market_conditions and no modification. After a partial fill Bybit
        says `PartiallyFilledCanceled`: the lowercased status violates the DB CHECK, so the row
        keeps `partially_filled` and no event goes out (§2.3, last paragraph)."""
        row = self._working.pop(key)
        self._reduce_only.discard(key)
        if om.exchange_cancel_status(row["filled_quantity"]) is None:
            log.info("exchange cancelled %s %s %s after %s filled (PartiallyFilledCanceled): "
                     "order-manager records nothing and sends no event", row["asset"], row["side"],
                     row["quantity"], row["filled_quantity"])
            return []
        try:
            with self._db.transaction() as conn:
                after = store.cancel_order(conn, key, self._now)
        except Exception:
            self._working[key] = row            # a failed transaction leaves the order working
            raise
        log.info("exchange cancelled %s %s %s", after["asset"], after["side"], after["quantity"])
        return [om.order_event(after, "cancelled", trace_id=after["trace_id"] or new_uuid(self._rng),
                               now=self._now, rng=self._rng,
                               extra={"market_conditions": om.fill_conditions(after, self._now)})]

    # -- market ticks --------------------------------------------------------------------------

    def on_tick(self, ticks: tuple[AssetTick, ...]) -> list[Outbound]:
        """Fill working orders against the new book and re-price positions now and then."""
        self._quotes.update({tick.symbol: tick.quote for tick in ticks})
        self._now = max(tick.at for tick in ticks)
        messages: list[Outbound] = self._position_manager_catches_up()
        for key in list(self._working):
            messages += self._work_order(key)
        if self._controls.position_manager_down.is_set():
            return messages
        if self._last_marks is None or self._now - self._last_marks >= self._position_update:
            self._last_marks = self._now
            messages += self._mark_positions()
        return messages

    def _work_order(self, key: str) -> list[Outbound]:
        row = self._working[key]
        spec, quote = self._specs[row["asset"]], self._quotes[row["asset"]]
        remaining = row["quantity"] - row["filled_quantity"]
        capped = False
        if key in self._reduce_only:
            cap = reduce_only_cap(row["side"], remaining, self._held_size(row["asset"]))
            if cap is None:
                return self._exchange_cancel(key)      # nothing left to reduce
            capped, remaining = cap < remaining, cap
        if row["order_type"] == "Market":
            fill = om.market_fill(row["side"], remaining, quote, spec, self._params, self._rng)
        else:
            ttl = self._params.limit_ttl_s
            if ttl is not None and self._now - row["created_at"] >= timedelta(seconds=ttl):
                return self._exchange_cancel(key)
            fill = om.limit_fill(row["side"], row["price"], remaining, quote, spec, self._params, self._rng)
        # A reduce-only order larger than the position is cut to it and then counts as filled.
        return [] if fill is None else self._apply_fill(key, fill, final=capped and fill.quantity == remaining)

    def _apply_fill(self, key: str, fill: om.OrderFill, *, final: bool = False) -> list[Outbound]:
        before = self._working[key]
        asset, side = before["asset"], before["side"]
        filled, average, fees = om.accumulate(before["filled_quantity"], before["average_price"],
                                              before["fees"], fill)
        status = "filled" if final else om.status_after(filled, before["quantity"])
        held = self._held_size(asset) + (fill.quantity if side == "Buy" else -fill.quantity)
        pending = _PendingFill(asset, side, fill.quantity, fill.price, fill.fee, held)
        pm_down = self._controls.position_manager_down.is_set()
        with self._db.transaction() as conn:
            row = store.record_fill(conn, key, status=status, filled_quantity=filled,
                                    average_price=average, fees=fees, now=self._now)
            position_row = None if pm_down else self._write_position(conn, pending)
        self._held[asset] = held
        if pm_down:
            self._pm_backlog.append(pending)
        if status == "filled":
            del self._working[key]
            self._reduce_only.discard(key)
        else:
            self._working[key] = row
        log.info("fill %s %s %s @ %s fee %s (%s %s/%s) position %s%s", asset, side,
                 fill.quantity, fill.price, fill.fee, row["order_type"], filled, row["quantity"], held,
                 " (position-manager down)" if pm_down else "")
        messages = []
        event_type = om.event_for_transition(before["status"], status)
        if event_type is not None:
            messages.append(om.order_event(row, event_type, trace_id=row["trace_id"] or new_uuid(self._rng),
                                           now=self._now, rng=self._rng,
                                           extra={"market_conditions": om.fill_conditions(row, self._now)}))
        if position_row is not None:
            messages.append(self._position_event(position_row))
        return messages

    def _write_position(self, conn, fill: _PendingFill) -> dict[str, Any]:
        """position-manager applies one fill to the asset's row, by the configured path."""
        current = store.position_row(conn, fill.asset)
        state = state_from_row(current) if current else None
        if self._position_path == "websocket":
            # Bybit's position message: the new size and a mark, no entry price (CONTRACTS §3.5).
            position = apply_websocket(state, fill.asset, fill.held_after, fill.price, None, self._now)
        else:
            position = apply_fill(state, fill.asset, fill.side, fill.quantity, fill.price, fill.fee, self._now)
        return store.save_position(conn, position)

    def _position_event(self, row: dict[str, Any]) -> Outbound:
        if self._position_path == "websocket":
            return position_event(row, update_source="websocket", trace_id=new_uuid(self._rng), now=self._now)
        return position_event(row, update_source="order_execution", trace_id=None, now=self._now)

    def _position_manager_catches_up(self) -> list[Outbound]:
        """Back from being down, position-manager applies the fills it missed, in order."""
        if not self._pm_backlog or self._controls.position_manager_down.is_set():
            return []
        messages = []
        with self._db.transaction() as conn:
            rows = [self._write_position(conn, fill) for fill in self._pm_backlog]
        self._pm_backlog.clear()
        for row in rows:
            messages.append(self._position_event(row))
        return messages

    def _mark_positions(self) -> list[Outbound]:
        """websocket-sourced updates: every open position re-priced at the current mid."""
        messages = []
        with self._db.transaction() as conn:
            for row in store.open_position_rows(conn):
                quote = self._quotes.get(row["asset"])
                if quote is None:
                    continue
                marked = mark(state_from_row(row), quote.mid.quantize(om.EIGHT_PLACES), self._now)
                saved = store.save_position(conn, marked)
                messages.append(position_event(saved, update_source="websocket",
                                               trace_id=new_uuid(self._rng), now=self._now))
        return messages
