"""Exit rules: pure functions, stdlib only, clock passed in.

The live exits role and replays call the same `should_exit`; state is keyed per position and
persisted by the caller through `ExitState.to_dict()` / `ExitState.from_dict()`.
"""
from msd.rules.config import (
    DEFAULT_PRIORITY,
    ExitRules,
    LadderStep,
    RuleConfigError,
    TakeProfit,
    TimeExit,
    Trailing,
)
from msd.rules.evaluate import in_cooldown, should_exit, track
from msd.rules.exit_amount import MIN_AMOUNT_USDT, exit_amount_usdt
from msd.rules.pacing import AssetRateLimit, Debouncer, take, would_allow
from msd.rules.state import initial_state, observe_price, pnl_pct, reset_needed
from msd.rules.types import (
    ExitDecision,
    ExitReason,
    ExitState,
    InvalidPositionData,
    PositionKey,
    PositionView,
    Side,
)

__all__ = [
    "DEFAULT_PRIORITY", "ExitRules", "LadderStep", "RuleConfigError", "TakeProfit", "TimeExit", "Trailing",
    "in_cooldown", "should_exit", "track", "MIN_AMOUNT_USDT", "exit_amount_usdt",
    "AssetRateLimit", "Debouncer", "take", "would_allow",
    "initial_state", "observe_price", "pnl_pct", "reset_needed",
    "ExitDecision", "ExitReason", "ExitState", "InvalidPositionData", "PositionKey", "PositionView", "Side",
]
