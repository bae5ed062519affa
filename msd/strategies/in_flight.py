"""msd's own entry signals that the shared tables do not show yet: the in-flight part of the
exposure cap.

A warm-up or model signal counts toward its asset's exposure from its decision until
order-manager's `orders` row for it exists (from then on the shared tables show it), it expired
unsent, or `window` passed (order-manager never took it: refused before writing a row, or it
was lost). msd.store.outbox.IN_FLIGHT_SQL states the same rule over `msd.signals`; the
signaller keeps the set here instead, seeded once from that table (the signals of an earlier
run or of the previous leader) and re-seeded after any failed database round trip (a write
whose commit was lost with the connection may have landed). Each exposure read then only asks
which of these signals have an order row now (the young ones on every read, older ones once a
second: see InFlightSignals), rather than summing every recent signal of the asset: with no
order-manager consuming, that sum covered the asset's last two minutes of signals on every read
(up to 24,000 rows at 200 signals/s; issue 13's largest stage).

Pure bookkeeping: the caller passes `now` and does the reads.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Iterable

from msd.values.messages import TradingSignal

# A warm-up or model signal with no order row after this long no longer counts toward exposure
# (the signaller's and the backtest's).
IN_FLIGHT_S = 120.0


@dataclass(frozen=True)
class InFlightSignal:
    signal_id: str
    asset: str
    signed_amount: Decimal      # buys positive, sells negative (USDT)
    decided_at: datetime        # the signal's timestamp (msd.signals.created_at)

    @classmethod
    def of(cls, signal: TradingSignal) -> "InFlightSignal":
        signed = signal.amount if signal.signal_type == "buy" else -signal.amount
        return cls(signal.signal_id, signal.asset, signed, signal.timestamp)


class InFlightSignals:
    """`window_s`: how long a signal with no order row counts. `young_s`, `recheck_s`: a signal is
    looked up in `orders` on every read while younger than `young_s` (order-manager writes the
    row within milliseconds of the signal when it runs), then at most every `recheck_s`; so a row
    written late (order-manager was down or slow) is seen up to `recheck_s` after it appeared,
    and until then the signal is counted twice (in flight and in the shared tables): the cap errs
    on the side of less exposure for that second. A read costs the young signals plus those due
    again, not every signal of the window."""

    def __init__(self, window_s: float, young_s: float = 0.5, recheck_s: float = 1.0):
        self.window = timedelta(seconds=window_s)
        self.young, self.recheck = timedelta(seconds=young_s), timedelta(seconds=recheck_s)
        self.by_asset: dict[str, dict[str, InFlightSignal]] = {}    # oldest added first
        self.due_at: dict[str, list[tuple[datetime, str]]] = {}     # per asset, a heap: next look-up of each
        self.totals: dict[str, Decimal] = {}
        self.seeded = False

    def seed(self, signals: Iterable[InFlightSignal]) -> None:
        """What msd.signals holds in flight (IN_FLIGHT_SQL's rule without the order check, which
        the reads make), oldest first, replacing whatever was kept."""
        self.forget()
        for signal in signals:
            self.add(signal)
        self.seeded = True

    def forget(self) -> None:
        """Unknown until seeded again (after a failed round trip: a lost commit may have landed)."""
        self.by_asset, self.due_at, self.totals, self.seeded = {}, {}, {}, False

    def add(self, signal: InFlightSignal) -> None:
        signals = self.by_asset.setdefault(signal.asset, {})
        if signal.signal_id in signals:
            return
        signals[signal.signal_id] = signal
        self.totals[signal.asset] = self.totals.get(signal.asset, Decimal(0)) + signal.signed_amount
        heapq.heappush(self.due_at.setdefault(signal.asset, []), (signal.decided_at + self.young, signal.signal_id))

    def settle(self, asset: str, signal_ids: Iterable[str]) -> None:
        """These no longer count: their order row exists, or they expired unsent."""
        signals = self.by_asset.get(asset, {})
        for signal_id in signal_ids:
            signal = signals.pop(signal_id, None)
            if signal is not None:
                self.totals[asset] -= signal.signed_amount

    def to_check(self, asset: str, now: datetime) -> list[str]:
        """Drop `asset`'s signals decided `window` or longer before `now` (order-manager never
        took them), then name those to look up in `orders` now: the young ones and those due
        again. A signal dated after `now` (the clock stepped back) counts as young; one added out
        of time order is dropped once the older ones added before it are."""
        signals = self.by_asset.get(asset)
        if not signals:
            return []
        self._drop_expired(asset, signals, now - self.window)
        due = []
        for signal_id in reversed(signals):
            if now - signals[signal_id].decided_at >= self.young:
                break
            due.append(signal_id)
        heap = self.due_at[asset]
        while heap and heap[0][0] <= now:
            _, signal_id = heapq.heappop(heap)
            if signal_id in signals:
                due.append(signal_id)
                heapq.heappush(heap, (now + self.recheck, signal_id))
        if not signals:
            heap.clear()
        return list(dict.fromkeys(due))

    def _drop_expired(self, asset: str, signals: dict[str, InFlightSignal], oldest: datetime) -> None:
        while signals:
            signal_id = next(iter(signals))
            if signals[signal_id].decided_at > oldest:
                return
            self.totals[asset] -= signals.pop(signal_id).signed_amount

    def total(self, asset: str) -> Decimal:
        """Signed sum of `asset`'s signals still counted."""
        return self.totals.get(asset, Decimal(0))
