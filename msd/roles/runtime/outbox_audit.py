"""What the outbox says (log lines, counters) about signals that did not simply go out once.

Invalid, expired and voided signals were never sent; an unconfirmed one may have been sent and
goes out again under its own signal_id. Lines go to the `msd.outbox` logger, with the signal's ids.
"""
from __future__ import annotations

import logging

from msd import metrics
from msd.bus.signal_format import signal_to_wire
from msd.store.outbox import ExpiredSignal, PendingSignal, VoidedSignal
from msd.values.messages import TradingSignal

log = logging.getLogger("msd.outbox")


def said_expired(expired: list[ExpiredSignal], max_age_s: float) -> None:
    for item in expired:
        metrics.SIGNALS_EXPIRED.labels(item.strategy_id, item.mode).inc()
        log.info("signal %s expired unsent after %.1fs (%s %s %s USDT, %s, limit %gs)", item.signal_id,
                 item.age_s, item.signal_type, item.asset, item.amount, item.strategy_id, max_age_s,
                 extra={"signal_id": item.signal_id, "strategy": item.strategy_id, "mode": item.mode,
                        "trace_id": item.body.get("trace_id"), "age_s": round(item.age_s, 3)})
    if expired:
        log.warning("%d signals waited longer than %gs in the outbox and expired unsent",
                    len(expired), max_age_s, extra={"expired": len(expired)})


def said_voided(voided: list[VoidedSignal]) -> None:
    for item in voided:
        metrics.SIGNALS_VOIDED.labels(item.strategy_id, item.mode, item.reason).inc()
        log.info("signal %s voided unsent after %.1fs (%s %s %s USDT, %s): %s", item.signal_id, item.age_s,
                 item.signal_type, item.asset, item.amount, item.strategy_id, item.reason,
                 extra={"signal_id": item.signal_id, "strategy": item.strategy_id, "mode": item.mode,
                        "trace_id": item.body.get("trace_id"), "reason": item.reason})


def said_unconfirmed(item: PendingSignal, reason: str) -> None:
    # The one way a broker outage sends a signal twice: it may be on the queue already, and it
    # stays pending, so it goes out again (same signal_id: order-manager dedupes). One line per
    # signal whose confirm was outstanding when the connection went.
    metrics.SIGNALS_UNCONFIRMED.labels(item.strategy_id, item.mode).inc()
    log.warning("signal %s may have reached the broker: the connection was lost before its confirm "
                "(%s); it stays pending and will be published again with the same signal_id", item.signal_id,
                reason, extra={"signal_id": item.signal_id, "trace_id": item.trace_id,
                               "strategy": item.strategy_id, "mode": item.mode, "unconfirmed": True})


def said_invalid(signal: TradingSignal, exc: ValueError) -> None:
    metrics.SIGNALS_INVALID.labels(signal.strategy_id).inc()
    log.error("signal failed validation and was not published: %s", exc,
              extra={"trace_id": signal.trace_id, "signal": signal_to_wire_safe(signal)})


def signal_to_wire_safe(signal: TradingSignal) -> str:
    """The signal for an error log line, even when it cannot be encoded as valid JSON."""
    try:
        return str(signal_to_wire(signal))
    except (ValueError, TypeError):
        return repr(signal)
