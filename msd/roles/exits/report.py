"""What the exit role tells operators: `msd-ctl status` fields, /healthz problems, gauges.

Everything is derived from the role's book of position states and its counters at report time,
so the status cannot drift from the state: a stalled exit is reported for as long as the state
says it is stalled, a position without market data for as long as its asset has none.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from msd import metrics

# An asset whose last market update is older than this has "no market data": its positions are
# evaluated from the positions table's current_price.
MARKET_STALE = timedelta(seconds=60)
LISTED = 20          # at most this many positions named per status entry


@dataclass
class ExitStats:
    updates: int = 0
    evaluations: int = 0
    stalls: int = 0
    sent: Counter = field(default_factory=Counter)         # by exit reason
    suppressed: Counter = field(default_factory=Counter)   # holds by reason: once per position and reason
    failed: Counter = field(default_factory=Counter)       # by cause
    invalid: Counter = field(default_factory=Counter)      # by reason
    voided: Counter = field(default_factory=Counter)       # pending exits voided unsent, by reason (voiding.py)
    errors: int = 0
    last_error: str | None = None
    last_exit: str | None = None

    def error(self, text: str) -> None:
        self.last_error = text


def _named(items: dict[str, str]) -> dict[str, str]:
    return dict(sorted(items.items())[:LISTED])


def report_status(role: Any, now: datetime) -> None:
    book, s = role.book, role.stats
    in_flight = sum(len(state.in_flight) for state in book.values())
    stalled = {f"{asset} {pid}": f"signal {f.signal_id} ({f.reason.value} {f.quantity}) sent "
                                 f"{(now - f.sent_at).total_seconds():.0f}s ago, order {f.order_status or 'not seen'}"
               for (asset, pid), state in book.items() for f in state.in_flight if f.stalled}
    below = {f"{asset} {pid}": f"{state.side.value} {state.size}" for (asset, pid), state in book.items()
             if state.below_minimum_warned}
    refused = {f"{asset} {pid}": reason for (asset, pid), (reason, _) in role.refused.items()}
    backing_off = {f"{asset} {pid}": f"exits refused {state.rejections} times in a row; next decision "
                                     f"{'now' if state.retry_at <= now else 'after ' + state.retry_at.isoformat()}"
                   for (asset, pid), state in book.items() if state.rejections >= 2 and state.retry_at is not None}
    unpriced = Counter(asset for (asset, _), state in book.items()
                       if state.ready and not _has_market_data(role.market.asset_state(asset), now))
    degraded: dict[str, str] = {}
    # The database and the broker are in `dependencies` (DependencyHealth), each on its own.
    if stalled:
        degraded["exits_in_flight"] = (f"{len(stalled)} exit(s) without effect after "
                                       f"{role.config.in_flight_timeout_s:g}s: " + "; ".join(sorted(stalled)[:3]))
    if backing_off:
        degraded["exits_refused"] = (f"{len(backing_off)} position(s) whose exits order-manager keeps refusing: "
                                     + "; ".join(f"{k}: {v}" for k, v in sorted(backing_off.items())[:3]))
    hedged = sorted(key for key, reason in refused.items() if reason == "hedge_mode")
    if hedged:
        degraded["hedge_mode_positions"] = f"{len(hedged)} hedge-mode position(s) not managed: " + ", ".join(hedged[:3])
    if unpriced:
        degraded["market_data"] = ("no market data for " + ", ".join(f"{a} ({n} open)" for a, n in sorted(unpriced.items()))
                                   + "; evaluated from positions.current_price")
    metrics.EXITS_IN_FLIGHT.set(in_flight)
    metrics.EXITS_STALLED.set(len(stalled))
    metrics.EXITS_REFUSED_BACKOFF.set(len(backing_off))
    metrics.EXIT_POSITIONS_BELOW_MINIMUM.set(len(below))
    metrics.EXIT_POSITIONS_UNPRICED.set(sum(unpriced.values()))
    for reason in ("hedge_mode", "disabled"):
        metrics.EXIT_POSITIONS_REFUSED.labels(reason).set(sum(1 for r in refused.values() if r == reason))
    role.ctx.set_status(
        mode=role.mode, open_positions=len(book), priced_assets=len(role.priced),
        updates=s.updates, evaluations=s.evaluations, exits_sent=dict(s.sent), exits_suppressed=dict(s.suppressed),
        exits_failed=dict(s.failed), invalid_updates=dict(s.invalid), evaluation_errors=s.errors,
        exits_in_flight=in_flight, exits_stalled=_named(stalled), stalls_total=s.stalls,
        below_min_order_value=_named(below), left_alone=_named(refused), exits_refused=_named(backing_off),
        without_market_data=dict(unpriced), last_error=s.last_error, last_exit=s.last_exit,
        outbox_backlog=role.outbox.backlog, expired=role.outbox.expired, exits_voided=dict(s.voided),
        unconfirmed=role.outbox.unconfirmed, degraded=degraded)


def _has_market_data(asset_state: Any, now: datetime) -> bool:
    return asset_state is not None and asset_state.updated_at is not None and now - asset_state.updated_at <= MARKET_STALE
