"""The fill rules hold over whole replays (msd.backtest): every fill lies within its candle's
[low, high] widened by half the spread, whatever the market does."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import HealthCheck, given, settings, strategies as st

from msd.backtest.candles import load_series
from msd.backtest.fills import CostModel
from msd.backtest.replay import Options, Replay
from tests.backtest_helpers import T0, random_walk, strategy, write_candles, write_config

HALF = Decimal("0.0005")
COSTS = CostModel(Decimal("0.00055"), Decimal("0.0002"), HALF, timedelta(milliseconds=200), timedelta(seconds=300))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), step=st.sampled_from([0.0005, 0.002, 0.01]),
       trend=st.sampled_from([-0.002, 0.0, 0.002]))
def test_every_fill_lies_within_its_candle_widened_by_half_the_spread(tmp_path, seed, step, trend):
    _, config = write_config(tmp_path, [strategy("explorer", "BTCUSDT", seed=seed),
                                        strategy("momentum", "BTCUSDT", "momentum", 0.2, seed=seed + 1)])
    path = write_candles(tmp_path, random_walk(150, seed, step=step, trend=trend))
    replay = Replay(config, [load_series(path, "BTCUSDT")], Options(costs=COSTS, startup_candles=61)).run()
    by_minute = {c.open_time: c for c in replay.series["BTCUSDT"].candles}
    assert replay.account.fills
    for fill in replay.account.fills:
        candle = by_minute[fill.candle_at]
        assert candle.low * (1 - HALF) <= fill.price <= candle.high * (1 + HALF), (fill, candle)


def test_gaps_and_zero_volume_minutes_are_no_trade_periods(tmp_path):
    """Nothing fills and nothing is decided on a zero-volume candle or across a gap; both counted."""
    _, config = write_config(tmp_path, [strategy("explorer", "BTCUSDT", seed=4)])
    rows = random_walk(200, 9, step=0.002)
    quiet = {r[0] for r in rows[100:120]}
    rows = [r[:5] + [0] if r[0] in quiet else r for r in rows]
    rows = rows[:150] + rows[160:]                      # ten minutes missing
    replay = Replay(config, [load_series(write_candles(tmp_path, rows), "BTCUSDT")],
                    Options(costs=COSTS, startup_candles=61)).run()
    assert (replay.counters.zero_volume, replay.counters.gaps) == (20, 10)
    quiet_times = {datetime.fromtimestamp(ms / 1000, timezone.utc) for ms in quiet}
    assert not [f for f in replay.account.fills if f.candle_at in quiet_times]
    decided = {e[0] for e in replay.events if e[1] == "decision"}
    closes = {t + timedelta(minutes=1) for t in quiet_times}
    assert not decided & closes
    assert len(decided) > 50


def test_an_order_trades_on_the_candle_it_reaches_the_exchange_in():
    from msd.backtest.candles import Candle
    from msd.backtest.fills import arrival
    decided = T0 + timedelta(minutes=5)                  # the close of the candle opened at minute 4
    minute = timedelta(minutes=1)
    next_candle = Candle(decided, *(Decimal(1),) * 5)
    after = Candle(decided + minute, *(Decimal(1),) * 5)
    assert arrival(decided, timedelta(0), next_candle, minute) == decided
    assert arrival(decided, timedelta(milliseconds=200), next_candle, minute) == decided + timedelta(milliseconds=200)
    assert arrival(decided, timedelta(seconds=90), next_candle, minute) is None
    assert arrival(decided, timedelta(seconds=90), after, minute) == decided + timedelta(seconds=90)


def test_a_newer_accepted_signal_cancels_the_assets_working_orders_as_order_manager_does(tmp_path):
    """CONTRACTS §2.3 `cancel_order` (and msd-sim): no Limit order fills after a newer signal for
    its asset was accepted; the ones still resting then are cancelled and counted apart. A Market
    order fills on its next candle whatever is decided at the same close (Bybit fills it first)."""
    _, config = write_config(tmp_path, [strategy("explorer", "BTCUSDT", seed=3, frequency_s=60),
                                        strategy("other", "BTCUSDT", seed=5, frequency_s=60)])
    path = write_candles(tmp_path, random_walk(240, 7, step=0.0004, trend=0.0008))
    replay = Replay(config, [load_series(path, "BTCUSDT")], Options(costs=COSTS, startup_candles=61)).run()
    rejected = {e[2] for e in replay.events if e[1] == "rejected"}
    decided = {sid: i for i, e in enumerate(replay.events) if e[1] == "decision"
               for sid in [_signal_id_of(replay, e)] if sid not in rejected}
    limits = {f.signal_id: f.order_type == "Limit" for f in replay.account.fills}
    assert any(limits.values()) and not all(limits.values())
    for j, event in enumerate(replay.events):
        if event[1] == "fill" and event[2] in decided and limits.get(event[2]):
            newer = [k for k in decided.values() if decided[event[2]] < k < j]
            assert not newer, f"{event} filled after a newer accepted signal: {replay.events[newer[0]]}"
    assert decided and replay.counters.cancelled_by_new_signal > 0
    cancelled = [e for e in replay.events if e[1] == "cancelled"]
    assert len(cancelled) == replay.counters.cancelled + replay.counters.cancelled_by_new_signal


def _signal_id_of(replay, event):
    """The decision event's signal (events name the strategy, asset and time, the decisions the id)."""
    at, _, strategy, asset, side, amount = event[:6]
    return next(sid for sid, d in replay.decisions.items()
                if (d["decided_at"], d["strategy"], d.get("side"), d.get("amount")) == (at, strategy, side, amount))
