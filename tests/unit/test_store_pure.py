"""The pure decisions of msd.store: fill deltas, reconnect backoff, bar dedup, schema checks."""
import random
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from msd.values.messages import Kline, OrderSnapshot
from msd.errors import MsdError
from msd.store.db import retry_backoff
from msd.store.executions import FillState, fill_delta
from msd.store.market import latest_per_minute
from msd.store.migrate import Migration, pending_migrations
from msd.store.neighbours import missing_columns

D = Decimal
T0 = datetime(2025, 11, 20, 10, 15, tzinfo=timezone.utc)


def order(filled: str, average: str | None, fees: str | None = None,
          price: str | None = None) -> OrderSnapshot:
    return OrderSnapshot(
        id="i", order_id="o", signal_id="s", asset="BTCUSDT", side="buy", order_type="Limit",
        quantity=D("1"), price=D(price) if price else None, status="partially_filled",
        filled_quantity=D(filled), average_price=D(average) if average else None,
        fees=D(fees) if fees else None, created_at=T0, updated_at=T0, executed_at=None,
        is_dry_run=False)


def test_first_fill_takes_the_average_price_as_is():
    delta = fill_delta(None, order("0.00400000", "94900.00000000", "0.1"))

    assert (delta.quantity, delta.price, delta.fee, delta.cumulative_quantity) == (
        D("0.004"), D("94900.00000000"), D("0.1"), D("0.004"))


def test_later_fill_price_is_derived_from_the_cumulative_averages():
    previous = FillState(D("0.004"), D("94900"), D("0.1"))

    delta = fill_delta(previous, order("0.01", "94870", "0.25"))

    assert (delta.quantity, delta.price, delta.fee) == (D("0.006"), D("94850"), D("0.15"))


def test_fee_rebates_give_a_negative_fee_delta():
    delta = fill_delta(FillState(D("0.5"), D("100"), D("0.02")), order("1", "100", "-0.01"))

    assert delta.fee == D("-0.03")


@pytest.mark.parametrize("filled", ["0.004", "0.002", "0E-8"])
def test_no_delta_when_nothing_new_is_filled(filled):
    assert fill_delta(FillState(D("0.004"), D("94900"), None), order(filled, "94900")) is None


def test_unknown_earlier_average_falls_back_to_the_cumulative_average():
    delta = fill_delta(FillState(D("0.004"), None, None), order("0.01", "94870"))

    assert delta.price == D("94870")


def test_impossible_derived_price_falls_back_to_the_cumulative_average():
    # An earlier average far above the new one would make the delta's price negative.
    delta = fill_delta(FillState(D("0.004"), D("500000"), None), order("0.01", "94870"))

    assert delta.price == D("94870")


def test_no_average_at_all_falls_back_to_the_limit_price_then_none():
    assert fill_delta(None, order("0.004", None, price="94900")).price == D("94900")
    assert fill_delta(None, order("0.004", None)).price is None


def test_backoff_grows_is_capped_and_jittered():
    rng = random.Random(7)
    delays = [retry_backoff(attempt, base=1.0, cap=8.0, rng=rng) for attempt in range(8)]

    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 2.0 ** attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 8.0
    assert len(set(delays)) == len(delays)
    assert retry_backoff(1000, cap=8.0, rng=rng) <= 8.0


def test_backoff_is_reproducible_with_a_seeded_rng():
    first = [retry_backoff(a, rng=random.Random(1)) for a in range(5)]
    second = [retry_backoff(a, rng=random.Random(1)) for a in range(5)]

    assert first == second


def test_backoff_refuses_negative_attempts():
    with pytest.raises(ValueError):
        retry_backoff(-1)


def kline(close: str, asset: str = "BTCUSDT") -> Kline:
    return Kline(asset=asset, start=T0, open=D(1), high=D(1), low=D(1), close=D(close),
                 volume=D(1), turnover=D(1), confirmed=False, timestamp=T0)


def test_latest_kline_per_minute_wins():
    kept = latest_per_minute([kline("1"), kline("5", "ETHUSDT"), kline("2")])

    assert [(k.asset, k.close) for k in kept] == [("BTCUSDT", D("2")), ("ETHUSDT", D("5"))]


def test_missing_tables_and_columns_are_named():
    required = {"orders": ("asset", "side"), "positions": ("asset", "size")}

    assert missing_columns(required, {"orders": {"asset", "side"}, "positions": {"asset"}}) == (
        "positions.size",)
    assert missing_columns(required, {"positions": {"asset", "size"}}) == ("orders",)


def test_pending_migrations_skip_applied_and_refuse_edited_files():
    first, second = Migration("001", "001_a.sql", "", "aa"), Migration("002", "002_b.sql", "", "bb")

    assert pending_migrations([first, second], {"001": "aa"}) == [second]
    with pytest.raises(MsdError, match="001_a.sql"):
        pending_migrations([first, second], {"001": "changed"})
