"""Property-based fuzzing of the exit evaluation (msd.rules) from the CONTRACTS.md examples.

Histories of one position (tests/exit_fuzzing.py: rows, events, prices, decisions, order
outcomes, stalls, expiries, with rules and instruments generated within validation) are replayed
through the pure rules; `Replay.run` raises on a crash or on a broken invariant (an exit above
the held size, a second exit while one is in flight, an unknown reason, a non-deterministic
transition, a row the table allows that the role cannot use). Fixed seed (derandomize) and
1,500 cases so `make test` is repeatable (with the codecs' 3,000, a few thousand in all);
benchmarks/fuzz.py runs 100,000.
"""
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from hypothesis import HealthCheck, given, settings

from msd.roles.exits.tables import row_facts
from msd.rules import ORDER_MANAGER_DEFAULTS, ExitReason, ExitRules, decide, note_row
from msd.store.neighbours import PositionRow
from tests.exit_fuzzing import Replay, exit_cases

FUZZ = settings(max_examples=1500, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


def test_no_history_crashes_the_exit_evaluation_or_breaks_its_invariants():
    seen: Counter[str] = Counter()

    @FUZZ
    @given(case=exit_cases())
    def property_holds(case):
        seen.update(Replay(case).run())

    property_holds()
    # The cases reach what the invariants are about: every exit reason, exits held in flight and
    # in the cooldown, and rows the role would skip.
    assert {f"exit:{reason.value}" for reason in ExitReason} <= set(seen), seen
    assert {"held:in_flight", "held:cooldown", "held:below_min_order_value"} <= set(seen), seen


@pytest.mark.parametrize("mark", [D(0), D("-97.5"), D("NaN")])
def test_positions_row_whose_current_price_is_not_a_price_still_gets_its_exits(mark):
    """Found by the fuzz: `positions.current_price` has no constraint; a row with 0 there was
    refused whole (InvalidPositionData), so the exit role skipped the position at every read and
    no stop loss could ever fire for it. The mark is only a fallback quote: it is left out."""
    now = datetime(2025, 11, 20, 12, 0, tzinfo=timezone.utc)
    row = PositionRow("3d6f0a51-2b7e-4d8c-9a1f-0e2d3c4b5a69", "BTCUSDT", D("2.00000000"), D(100), mark, now,
                      now - timedelta(days=1), "one-way")
    facts = row_facts(row)
    assert facts.current_price is None and facts.size == 2 and facts.average_entry_price == 100
    state = note_row(None, facts, now).state
    verdict = decide(state, D(97), ExitRules(stop_loss_pct=D(2)), ORDER_MANAGER_DEFAULTS, now, "s1")
    assert verdict.decision.reason is ExitReason.STOP_LOSS and verdict.decision.quantity == 2
