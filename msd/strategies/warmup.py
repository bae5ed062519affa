"""Warm-up signal planning (FR-007, FR-008, FR-011, SC-009): one pure decision per evaluation.

`plan_signal` answers "would this strategy signal on this asset now, and with what?" from the
parameters, the market snapshot, the asset's exposure, a seeded generator and the clock. It
says nothing about rate limits or conflicts between strategies; `engine` adds those.

Exposure is the asset's net notional in USDT (positions plus open orders, long positive). A
buy may not lift it above `max_exposure_usdt`, a sell may not push it below
`-max_exposure_usdt`.
When the exposure cannot be read (database down) nothing is planned for the asset, sells
included: a sell that cannot be shown to reduce exposure might open an unbounded short.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from msd.market.state import MarketSnapshot
from msd.strategies.heuristics import BUY
from msd.strategies.params import WarmupParams

SKIP_REASONS = ("frequency", "exposure_unknown", "no_opinion", "exposure_limit")
_CENTS_PER_USDT = 100
_CENT = Decimal("0.01")


@dataclass(frozen=True)
class ExposureUnknown:
    """Marker: the open orders/positions of the asset could not be read; `why` is for logs."""
    why: str = "exposure could not be read"


@dataclass(frozen=True)
class Planned:
    """A signal to emit (before rate limits and conflict checks); a model-mode plan carries the
    model call it was decided on (msd.strategies.model_plan.ModelCall), so the signal names it."""
    side: str
    amount_usdt: Decimal
    confidence: float
    reasoning: str
    call: Any = None


@dataclass(frozen=True)
class Skip:
    """No signal; `reason` is a metric label from SKIP_REASONS."""
    reason: str


def draw_amount(rng: random.Random, params: WarmupParams) -> Decimal:
    """A uniform amount on the 0.01 USDT grid within [min_amount_usdt, max_amount_usdt].

    Drawing whole cents keeps every amount inside the bounds exactly (WarmupParams requires
    the bounds themselves to be whole cents), which rounding a float draw would not.
    """
    low = int(params.min_amount_usdt * _CENTS_PER_USDT)
    high = int(params.max_amount_usdt * _CENTS_PER_USDT)
    return (Decimal(rng.randint(low, high)) / _CENTS_PER_USDT).quantize(_CENT)


def frequency_allows(params: WarmupParams, last_signal_at: datetime | None, now: datetime) -> bool:
    """At most one signal per `frequency_s`: not before last_signal_at + frequency."""
    if last_signal_at is None:
        return True
    return now >= last_signal_at + timedelta(seconds=params.frequency_s)


def exposure_usdt(exposure: Any, market_price: Decimal) -> Decimal:
    """Net signed USDT committed on the asset (long positive), from the asset's open orders and
    positions as read from the shared tables (msd.store.neighbours.Exposure).

    Orders and positions without a price in the shared tables (a pending Market order has
    none) are valued at the current market price.
    """
    priced_size = exposure.position_size - exposure.unpriced_position_size
    sign = Decimal(-1) if priced_size < 0 else Decimal(1)
    unpriced = (exposure.unpriced_position_size + exposure.unpriced_buy_quantity
                - exposure.unpriced_sell_quantity) * market_price
    return sign * exposure.position_notional + exposure.open_buy_notional - exposure.open_sell_notional + unpriced


def exposure_allows(side: str, amount: Decimal, exposure_usdt: Decimal, cap: Decimal) -> bool:
    """A buy may not lift net exposure above `cap`, a sell may not push it below `-cap`.

    Each side is only limited in the direction it moves exposure, so a sell that trims an
    oversized long (or a buy that covers a short) is always allowed.
    """
    if side == BUY:
        return exposure_usdt + amount <= cap
    return exposure_usdt - amount >= -cap


def plan_signal(params: WarmupParams, snapshot: MarketSnapshot,
                exposure_usdt: Decimal | ExposureUnknown, rng: random.Random, now: datetime,
                last_signal_at: datetime | None) -> Planned | Skip:
    """Decide one warm-up signal for `snapshot.asset`, or say why not.

    The checks that need no randomness come first, so a skipped evaluation does not consume
    draws from the strategy's generator. The warm-up budget and duration are not checked here:
    a strategy that spent them is paused (msd.learning.budget) and not evaluated at all.
    """
    if not frequency_allows(params, last_signal_at, now):
        return Skip("frequency")
    if isinstance(exposure_usdt, ExposureUnknown):
        return Skip("exposure_unknown")
    decision = params.heuristic.decide(snapshot, rng, params)
    if decision is None:
        return Skip("no_opinion")
    amount = draw_amount(rng, params)
    if not exposure_allows(decision.side, amount, exposure_usdt, params.max_exposure_usdt):
        return Skip("exposure_limit")
    reasoning = f"warm-up {decision.reasoning}; {amount} USDT; exposure {exposure_usdt} USDT"
    return Planned(side=decision.side, amount_usdt=amount, confidence=decision.confidence,
                   reasoning=reasoning)
