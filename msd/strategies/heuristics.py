"""Warm-up heuristics (FR-007): momentum, mean reversion and controlled random.

Each decides a side from a market snapshot and a caller-owned `random.Random`, so a strategy
seeded the same way makes the same decisions on the same data. `None` means "no opinion"
(e.g. momentum before any 1-minute bar exists); the caller then emits nothing.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # params imports this module for the enum; the reverse is only for typing
    from msd.market.state import MarketSnapshot
    from msd.strategies.params import WarmupParams

BUY, SELL = "buy", "sell"
# Preferred lookbacks for "the recent return", best first, with their length in minutes.
_LOOKBACKS = (("5m", 5), ("1m", 1))


@dataclass(frozen=True)
class HeuristicCall:
    """A heuristic's call: side ("buy"/"sell"), confidence in the configured range, and why."""
    side: str
    confidence: float
    reasoning: str


def _opposite(side: str) -> str:
    return SELL if side == BUY else BUY


def _recent_return(snapshot: "MarketSnapshot") -> tuple[str, int, float] | None:
    for label, minutes in _LOOKBACKS:
        value = snapshot.returns.get(label)
        if value is not None:
            return label, minutes, value
    return None


def _draw_confidence(rng: random.Random, params: "WarmupParams") -> float:
    return rng.uniform(params.confidence_min, params.confidence_max)


def _apply_randomness(side: str, rng: random.Random, randomness: float) -> tuple[str, bool]:
    """Flip the side with probability randomness/2: at randomness 1 the call is a coin toss.

    The draw happens even at randomness 0 so that changing the setting does not shift the
    rest of the random sequence.
    """
    flipped = rng.random() < randomness / 2
    return (_opposite(side) if flipped else side), flipped


def _finish(side: str, why: str, rng: random.Random, params: "WarmupParams") -> HeuristicCall:
    side, flipped = _apply_randomness(side, rng, params.randomness)
    if flipped:
        why += f"; flipped to {side} by randomness {params.randomness}"
    return HeuristicCall(side=side, confidence=_draw_confidence(rng, params), reasoning=why)


def momentum(snapshot: "MarketSnapshot", rng: random.Random,
             params: "WarmupParams") -> HeuristicCall | None:
    """Follow the sign of the recent log return (5 min, else 1 min); flat or unknown: no opinion."""
    recent = _recent_return(snapshot)
    if recent is None or recent[2] == 0:
        return None
    label, _, value = recent
    side = BUY if value > 0 else SELL
    return _finish(side, f"momentum: {label} log return {value:+.6f} -> {side}", rng, params)


def mean_reversion(snapshot: "MarketSnapshot", rng: random.Random,
                   params: "WarmupParams") -> HeuristicCall | None:
    """Bet against a stretched move: |z| >= stretch_z, z = return / (volatility * sqrt(minutes))."""
    recent = _recent_return(snapshot)
    if recent is None or not snapshot.volatility:
        return None
    label, minutes, value = recent
    z_score = value / (snapshot.volatility * math.sqrt(minutes))
    if abs(z_score) < params.stretch_z:
        return None
    side = SELL if z_score > 0 else BUY
    why = f"mean_reversion: {label} z-score {z_score:+.2f} beyond {params.stretch_z} -> {side}"
    return _finish(side, why, rng, params)


def controlled_random(snapshot: "MarketSnapshot", rng: random.Random,
                      params: "WarmupParams") -> HeuristicCall:
    """Buy or sell with probability 1/2 each, from the seeded generator."""
    side = BUY if rng.random() < 0.5 else SELL
    return HeuristicCall(side=side, confidence=_draw_confidence(rng, params),
                    reasoning=f"controlled random -> {side}")


class Heuristic(StrEnum):
    """The configurable heuristics; the value is the config spelling."""
    MOMENTUM = "momentum"
    MEAN_REVERSION = "mean_reversion"
    RANDOM = "random"

    def decide(self, snapshot: "MarketSnapshot", rng: random.Random,
               params: "WarmupParams") -> HeuristicCall | None:
        """Run this heuristic on a snapshot."""
        return _DECIDERS[self](snapshot, rng, params)


_DECIDERS: dict[Heuristic, Callable[..., HeuristicCall | None]] = {
    Heuristic.MOMENTUM: momentum,
    Heuristic.MEAN_REVERSION: mean_reversion,
    Heuristic.RANDOM: controlled_random,
}
