"""Exit rules: pure functions, stdlib only, clock passed in.

`note_row`/`fold_price`/`fold_bar`/`note_order` build a position's `ExitState` from what is
observed, and `decide` returns the decision together with the next state. The live exits role
and the backtest call them through one step, msd.strategies.exit_step (which also picks the
price and applies the per-asset rate). The caller persists states through
`ExitState.to_dict()` / `ExitState.from_dict()`.
"""
from msd.rules.config import (
    DEFAULT_PRIORITY,
    MIN_COOLDOWN,
    ExitRules,
    LadderStep,
    RuleConfigError,
    TakeProfit,
    TimeExit,
    Trailing,
)
from msd.rules.evaluate import Verdict, decide
from msd.rules.exit_amount import (
    AMOUNT_PADDING, ExitAmountError, Fill, check_amount, crossed_zero, encode_amount, entry_of_an_earlier_position,
    fill_path_entry, order_manager_quantity, position_entries, size_exit,
)
from msd.rules.pacing import Debouncer
from msd.rules.state import (
    REJECTION_BACKOFF_CAP, RowOutcome, fold_bar, fold_price, forget_exits, new_position, note_order, note_published,
    note_row, note_stalls, pnl_pct, rejection_backoff, row_order,
)
from msd.rules.unsent import UnsentExit, VoidReason, sift_unsent, void_reason
from msd.rules.types import (
    ORDER_MANAGER_DEFAULTS,
    ExitDecision,
    ExitReason,
    ExitState,
    InFlight,
    Instrument,
    InvalidPositionData,
    PositionKey,
    RowFacts,
    Side,
)

__all__ = [
    "DEFAULT_PRIORITY", "MIN_COOLDOWN", "ExitRules", "LadderStep", "RuleConfigError", "TakeProfit", "TimeExit",
    "Trailing", "Verdict", "decide",
    "AMOUNT_PADDING", "ExitAmountError", "Fill", "check_amount", "crossed_zero", "encode_amount",
    "entry_of_an_earlier_position", "fill_path_entry", "order_manager_quantity", "position_entries", "size_exit",
    "Debouncer",
    "REJECTION_BACKOFF_CAP", "RowOutcome", "rejection_backoff", "fold_bar", "fold_price", "forget_exits",
    "new_position", "note_order", "note_published", "note_row", "note_stalls", "pnl_pct", "row_order",
    "ORDER_MANAGER_DEFAULTS", "ExitDecision", "ExitReason", "ExitState", "InFlight", "Instrument",
    "InvalidPositionData", "PositionKey", "RowFacts", "Side",
    "UnsentExit", "VoidReason", "sift_unsent", "void_reason",
]
