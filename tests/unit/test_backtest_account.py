"""Per-strategy FIFO lots, pro-rata exit allocation, PnL that adds up (msd.backtest.account)."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given, settings, strategies as st

from msd.backtest.account import Account

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
D = Decimal


def fill(account, minute, side, qty, price, strategy, fee="0"):
    return account.fill(at=T0 + timedelta(minutes=minute), asset="BTCUSDT", side=side, quantity=D(qty),
                        price=D(price), fee=D(fee), reference=D(price), order_type="Market",
                        signal_id=f"s{minute}", strategy=strategy, exit_reason=None if strategy else "stop_loss")


def test_fifo_lots_close_oldest_first():
    account = Account(D(1000))
    fill(account, 0, "Buy", "1", "100", "a")
    fill(account, 1, "Buy", "1", "110", "a")
    fill(account, 2, "SELL", "1.5", "120", "a")
    closed = [(t.quantity, t.entry_price, t.pnl) for t in account.trades]
    assert closed == [(D(1), D(100), D(20)), (D("0.5"), D(110), D(5))]
    assert account.book("a", "BTCUSDT").open_quantity == D("0.5")


def test_an_exit_is_split_pro_rata_over_the_strategies_holding_the_side():
    account = Account(D(1000))
    fill(account, 0, "Buy", "3", "100", "a", fee="0.3")
    fill(account, 1, "Buy", "1", "100", "b", fee="0.1")
    records = fill(account, 2, "SELL", "2", "90", None, fee="0.2")
    assert [(r.strategy, r.quantity, r.fee) for r in records] == [("a", D("1.5"), D("0.15")), ("b", D("0.5"), D("0.05"))]
    assert account.book("a", "BTCUSDT").open_quantity == D("1.5")
    assert account.book("b", "BTCUSDT").open_quantity == D("0.5")
    assert {t.strategy: t.exit_reason for t in account.trades} == {"a": "stop_loss", "b": "stop_loss"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["Buy", "SELL"]), st.integers(1, 5000), st.integers(50, 150),
                          st.sampled_from(["a", "b", "c", None])), min_size=1, max_size=40),
       st.integers(50, 150))
def test_strategy_pnl_sums_to_the_account_pnl_to_the_cent(fills, mark):
    account = Account(D(10000))
    for minute, (side, qty, price, strategy) in enumerate(fills):
        size = account.size("BTCUSDT")
        if strategy is None:            # an exit only closes what is held, on the other side
            if size == 0:
                continue
            side = "SELL" if size > 0 else "Buy"
            qty_dec = min(D(qty) / 1000, abs(size))
        else:
            qty_dec = D(qty) / 1000
        account.fill(at=T0 + timedelta(minutes=minute), asset="BTCUSDT", side=side, quantity=qty_dec,
                     price=D(price), fee=(qty_dec * price * D("0.00055")), reference=D(price), order_type="Market",
                     signal_id=f"s{minute}", strategy=strategy)
    marks = {"BTCUSDT": D(mark)}
    account_pnl = account.equity(marks) - D(10000)
    total = sum(account.strategy_pnl(marks).values(), D(0))
    assert total.quantize(D("0.01")) == account_pnl.quantize(D("0.01"))
    assert abs(total - account_pnl) < D("1e-9")
    assert sum((b.open_quantity for b in account.books.values()), D(0)) == account.size("BTCUSDT")
