"""The exit role's pure parts: price selection, position views, signals, and the engine's bookkeeping."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from msd.bus.signal_format import signal_to_wire
from msd.config import ExitsConfig
from msd.market.state import AssetState
from msd.roles.exit_engine import ExitEngine, Watched
from msd.roles.exit_inputs import PriceQuote, exit_signal, freshest, market_quotes, position_view, table_quote
from msd.rules import AssetRateLimit, ExitRules, InvalidPositionData, LadderStep, TakeProfit, Trailing
from msd.store.neighbours import PositionRow
from tests.contract.order_manager_rules import problems

T0 = datetime(2025, 11, 20, 10, 0, tzinfo=timezone.utc)
D = Decimal


def row(size="1", entry="100", current="100", *, pid="p-1", asset="BTCUSDT", created=T0, updated=T0):
    return PositionRow(pid, asset, D(size), None if entry is None else D(entry),
                       None if current is None else D(current), updated, created, "one-way")


def config(rules=None, burst=3, **overrides):
    rules = rules or ExitRules(stop_loss_pct=D(2), trailing=Trailing(D("1.5"), D("0.8")), take_profit=TakeProfit(pct=D(50)))
    return ExitsConfig(fallback_after_s=30, poll_interval_s=5, strategy_id="exit-engine", debounce_s=0,
                       debounce_max_delay_s=0, asset_rate=AssetRateLimit(D(1), burst), rules=rules,
                       per_asset=overrides)


def quote(price, at=T0, source="positions_table"):
    return PriceQuote(D(price), at, source)


def view(size="1", pid="p-1", created=T0, entry="100", asset="BTCUSDT"):
    return position_view(asset, pid, D(size), row(size, entry, pid=pid, created=created, asset=asset), None, T0)


# --- inputs -------------------------------------------------------------------------------------

def test_freshest_price_wins_and_a_tie_prefers_the_traded_price():
    old_table = quote("100", T0)
    newer_trade = quote("99", T0 + timedelta(seconds=1), "market_last_price")
    assert freshest([old_table, newer_trade, None]) == newer_trade
    tied = [quote("100", T0), quote("101", T0, "market_mid"), quote("102", T0, "market_last_price")]
    assert freshest(tied).source == "market_last_price"
    assert freshest([None]) is None


def test_market_quotes_skip_a_crossed_book_and_unknown_assets():
    state = AssetState("BTCUSDT", last_price=D(100), last_price_at=T0, bid=D(101), ask=D(100), book_at=T0)
    assert [q.source for q in market_quotes(state)] == ["market_last_price"]
    assert market_quotes(None) == []
    assert table_quote(row(current=None)) is None


def test_view_takes_side_from_the_signed_size_and_entry_from_the_row():
    short = view("-0.003")
    assert (short.key.side.value, short.size, short.entry_price) == ("short", D("0.003"), D(100))


def test_view_of_a_row_without_open_time_is_dated_from_the_known_state_else_now():
    undated = row(created=None)
    known = T0 - timedelta(hours=3)
    assert position_view("BTCUSDT", "p-1", D(1), undated, known, T0).opened_at == known
    assert position_view("BTCUSDT", "p-1", D(1), undated, None, T0).opened_at == T0


def test_view_without_entry_price_is_invalid():
    with pytest.raises(InvalidPositionData, match="average_entry_price"):
        position_view("BTCUSDT", "p-1", D(1), row(entry=None), None, T0)


@pytest.mark.parametrize("size, price, side, amount", [("2", "97", "sell", D("194.00")),
                                                        ("-3", "103", "buy", D("309.00"))])
def test_stop_loss_signal_closes_in_usdt_with_the_trigger_price(size, price, side, amount):
    engine = ExitEngine(config())
    evaluation = engine.evaluate(view(size), quote(price), T0)
    signal = exit_signal(evaluation.decision, evaluation.quote, None, "exit-engine", "t-1", {"trigger": "event"})
    assert (signal.signal_type, signal.amount, signal.market_data_snapshot.price) == (side, amount, D(price))
    wire = signal_to_wire(signal)
    assert problems(wire) == []
    meta = wire["metadata"]
    assert (meta["exit_reason"], meta["price_source"], meta["position_id"], meta["urgency"]) == \
        ("stop_loss", "positions_table", "p-1", True)
    assert wire["trace_id"] == "t-1"


# --- engine -------------------------------------------------------------------------------------

def test_state_is_per_position_not_per_asset():
    engine = ExitEngine(config())
    engine.keep(engine.evaluate(view(pid="a"), quote("110"), T0), sent=False)
    engine.keep(engine.evaluate(view(pid="b"), quote("105"), T0), sent=False)
    assert {pid: s.extreme_price for pid, s in engine.states.items()} == {("BTCUSDT", "a"): 110, ("BTCUSDT", "b"): 105}


def test_new_position_under_the_same_id_does_not_inherit_the_old_peak():
    engine = ExitEngine(config())
    engine.keep(engine.evaluate(view(), quote("110"), T0), sent=False)
    reopened = view(created=T0 + timedelta(hours=1))
    evaluation = engine.evaluate(reopened, quote("109"), T0 + timedelta(hours=1))
    # Under the old 110 peak, 109 would be a trailing stop; a fresh state has never been armed.
    assert evaluation.decision is None and evaluation.state.extreme_price == 109


def test_flip_deletes_the_old_sides_row_and_close_forgets_the_position():
    engine = ExitEngine(config())
    engine.keep(engine.evaluate(view("1"), quote("100"), T0), sent=False)
    engine.saved()
    engine.keep(engine.evaluate(view("-1"), quote("100"), T0), sent=False)
    deleted, upserts = engine.changes()
    assert deleted == [("BTCUSDT", "long", "p-1")] and [u["side"] for u in upserts] == ["short"]
    engine.saved()
    engine.close(("BTCUSDT", "p-1"))
    assert engine.changes() == ([("BTCUSDT", None, "p-1")], []) and engine.known() == set()


def test_unsent_exit_keeps_the_tracked_state_so_it_fires_again():
    engine = ExitEngine(config())
    evaluation = engine.evaluate(view(), quote("97"), T0)
    engine.keep(evaluation, sent=False)
    assert engine.states[("BTCUSDT", "p-1")].last_exit_at is None
    assert engine.evaluate(view(), quote("97"), T0).decision is not None


def test_cooldown_holds_a_firing_rule_back_and_says_so():
    engine = ExitEngine(config())
    engine.keep(engine.evaluate(view(), quote("97"), T0), sent=True)
    held = engine.evaluate(view(), quote("96"), T0 + timedelta(seconds=10))
    quiet = engine.evaluate(view(), quote("100"), T0 + timedelta(seconds=10))
    assert (held.decision, held.suppressed, quiet.suppressed) == (None, "cooldown", None)
    assert engine.evaluate(view(), quote("96"), T0 + timedelta(seconds=61)).decision is not None


def test_asset_rate_limit_keeps_the_ladder_step_undone():
    ladder = ExitRules(take_profit=TakeProfit(steps=(LadderStep(D(3), D("0.5")), LadderStep(D(5), D(1)))),
                       cooldown=timedelta(0))
    engine = ExitEngine(config(ladder, burst=1))
    first = engine.evaluate(view(pid="a"), quote("104"), T0)
    engine.keep(first, sent=True)
    engine.spend("BTCUSDT", T0)
    limited = engine.evaluate(view(pid="b"), quote("104"), T0)
    engine.keep(limited, sent=False)
    assert limited.suppressed == "asset_rate" and engine.states[("BTCUSDT", "b")].ladder_steps_done == ()
    assert engine.evaluate(view(pid="b"), quote("104"), T0 + timedelta(seconds=1)).decision is not None


def test_live_config_keeps_state_and_applies_per_asset_rules():
    engine = ExitEngine(config())
    engine.keep(engine.evaluate(view(), quote("110"), T0), sent=False)
    tight = ExitRules(stop_loss_pct=D("0.5"))
    engine.apply_config(config(**{"BTCUSDT": tight}))
    assert engine.states[("BTCUSDT", "p-1")].extreme_price == 110
    assert engine.evaluate(view(), quote("99.4"), T0).decision.reason.value == "stop_loss"
    assert engine.evaluate(view(asset="ETHUSDT"), quote("99.4"), T0).decision is None


def test_price_ticks_reach_only_watched_positions_of_their_asset():
    engine = ExitEngine(config())
    engine.watch(("BTCUSDT", "p-1"), Watched(view(), quote("100"), None, "websocket"))
    assert engine.positions_of("BTCUSDT") == [("BTCUSDT", "p-1")] and engine.positions_of("ETHUSDT") == []


def test_current_size_prefers_the_table_when_its_row_is_not_older_than_the_event():
    from datetime import datetime, timedelta, timezone
    from decimal import Decimal
    from types import SimpleNamespace
    from msd.roles.exit_inputs import current_size
    t = datetime(2026, 11, 24, tzinfo=timezone.utc)
    row = SimpleNamespace(size=Decimal(0), last_updated=t)
    assert current_size(SimpleNamespace(size=Decimal(2), timestamp=t - timedelta(seconds=5)), row) == 0
    assert current_size(SimpleNamespace(size=Decimal(2), timestamp=t + timedelta(seconds=5)), row) == 2
