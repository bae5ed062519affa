"""When the learning lifecycle is checked and when a warm-up budget starts: the daemon's
signaller (msd.roles.signaller.learning_loop, model_book) and the backtest
(msd.backtest.replay, learner) both ask here, so a backtest reads the warm-up spend as often as
the daemon does and counts it from the same moment.

A check runs every `trainer.check_interval_s`; the slow reads (each warm-up strategy's spend,
hence the budget and duration pauses, and the dataset sizes) ride on a check at most every
SLOW_READS_EVERY_S, or every SLOW_READS_CHECKS checks when checks are more frequent. Pure: `at`
is seconds on the caller's clock (the daemon's monotonic clock, the backtest's event time); a
caller that can only check at some moments (a backtest, at candle closes) checks at the first
of them at or after the due time.
"""
from __future__ import annotations

from dataclasses import dataclass

SLOW_READS_EVERY_S = 60.0        # dataset sizes and warm-up spend at most this often...
SLOW_READS_CHECKS = 10           # ...or every this many checks when checks are more frequent


@dataclass(frozen=True)
class Cadence:
    next_check: float = float("-inf")     # the first check is due at once
    next_slow: float = float("-inf")


@dataclass(frozen=True)
class Due:
    cadence: Cadence                      # the cadence to keep
    check: bool                           # check the lifecycle now
    slow: bool                            # ...and read the slow figures with it


def check_due(cadence: Cadence, at: float, check_interval_s: float) -> Due:
    """Whether a check (and the slow reads) is due at `at`, and the cadence after it."""
    if at < cadence.next_check:
        return Due(cadence, False, False)
    slow = at >= cadence.next_slow
    next_slow = at + min(SLOW_READS_EVERY_S, SLOW_READS_CHECKS * check_interval_s) if slow else cadence.next_slow
    return Due(Cadence(at + check_interval_s, next_slow), True, slow)


@dataclass(frozen=True)
class BudgetStart:
    reason: str
    restart: bool                         # False: only if the strategy has no budget yet


def budget_start(before_mode: str | None, mode: str) -> BudgetStart | None:
    """Whether a strategy served in `mode`, last served in `before_mode` (None: never), starts a
    warm-up budget now: its first warm-up (kept if it has one already, e.g. across a restart),
    or a new one back in warm-up from a model. None: it keeps the budget it has."""
    if mode != "warmup":
        return None
    if before_mode == "model":
        return BudgetStart("back in warm-up", restart=True)
    return BudgetStart("first warm-up", restart=False)
