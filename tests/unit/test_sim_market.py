"""The synthetic market: reproducible, sane microstructure, and a learnable edge only when asked."""
import random
from datetime import datetime, timedelta

import numpy as np
import pytest

from msd.ml.models import LogisticModel
from msd.sim.market import CATALOG, MarketGenerator, MarketParams

START = datetime(2025, 11, 20, 10, 0)
HORIZON = 5                 # minutes
ROUND_TRIP_FEE = 0.002      # msd's default round-trip fee (msd.ml.evaluation)


def generator(regime: str, seed: int = 7, symbol: str = "BTCUSDT") -> MarketGenerator:
    return MarketGenerator(MarketParams(regime=regime), (CATALOG[symbol],), START, random.Random(seed))


def minute_samples(regime: str, minutes: int = 1200, seed: int = 7):
    """Per minute: what a decision could see (1-/5-minute returns, imbalance, spread) and the close."""
    market = generator(regime, seed)
    closes, imbalance, spread = [], [], []
    for minute in range(1, minutes + 1):
        (tick,) = market.advance(START + timedelta(minutes=minute))
        quote = tick.quote
        closes.append(float(tick.closed_bars[-1].close))
        imbalance.append(float((quote.bid_size - quote.ask_size) / (quote.bid_size + quote.ask_size)))
        spread.append(float((quote.ask - quote.bid) / quote.mid * 100))
    log_close = np.log(np.array(closes))
    rows = range(HORIZON, minutes - HORIZON)
    X = np.array([[log_close[i] - log_close[i - 1], log_close[i] - log_close[i - HORIZON],
                   imbalance[i], spread[i]] for i in rows])
    forward = np.array([log_close[i + HORIZON] - log_close[i] for i in rows])
    return X, forward


def test_same_seed_same_market_whatever_the_tick_rate():
    coarse, fine = generator("learnable"), generator("learnable")
    end = START + timedelta(minutes=3)
    (a,) = coarse.advance(end)
    for second in range(1, 181):
        (b,) = fine.advance(START + timedelta(seconds=second))
    assert (a.quote, a.last_price, a.forming_bar) == (b.quote, b.last_price, b.forming_bar)
    (other,) = generator("learnable", seed=8).advance(end)
    assert other.quote != a.quote


def test_book_and_bars_are_consistent():
    market = generator("learnable", symbol="ETHUSDT")
    for minute in range(1, 31):
        (tick,) = market.advance(START + timedelta(minutes=minute))
        quote = tick.quote
        assert quote.bid < quote.ask and quote.bid_size > 0 and quote.ask_size > 0
        spread_bps = float((quote.ask - quote.bid) / quote.mid) * 1e4
        assert 0.5 < spread_bps < 10
        (bar,) = tick.closed_bars
        assert bar.confirmed and bar.start == START + timedelta(minutes=minute - 1)
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert tick.trades and all(t.price in (quote.bid, quote.ask) or t.at < tick.at for t in tick.trades)
    assert 0.5 * 900000 < float(tick.stats.volume_24h) < 1.5 * 900000


@pytest.mark.parametrize("regime, low, high", [("learnable", 0.8, 1.0), ("noise", 0.44, 0.56)])
def test_observable_state_predicts_the_next_five_minutes_only_when_learnable(regime, low, high):
    X, forward = minute_samples(regime)
    imbalance_agrees = np.mean(np.sign(X[:, 2]) == np.sign(forward))
    momentum_agrees = np.mean(np.sign(X[:, 1]) == np.sign(forward))
    assert low <= imbalance_agrees <= high
    assert low <= momentum_agrees <= high


@pytest.mark.parametrize("regime, low, high", [("learnable", 0.75, 1.0), ("noise", 0.0, 0.6)])
def test_logistic_model_beats_fees_out_of_sample_only_when_learnable(regime, low, high):
    X, forward = minute_samples(regime, minutes=2400, seed=11)
    split = len(X) // 2
    model = LogisticModel().fit(X[:split], (forward[:split] > 0).astype(np.int64))
    direction = np.where(model.predict(X[split + HORIZON:]) == 1, 1.0, -1.0)
    # Directional accuracy after fees: the called direction must move by more than a round trip.
    paid = direction * forward[split + HORIZON:] > ROUND_TRIP_FEE
    assert low <= paid.mean() <= high


def test_noise_regime_has_no_hidden_drift():
    market = generator("noise")
    (tick,) = market.advance(START + timedelta(minutes=10))
    assert tick.drift_sign == 0


@pytest.mark.parametrize("field, value", [("regime", "trending"), ("step_s", 7.0),
                                          ("volatility_per_minute", 0.0), ("book_noise", -1.0)])
def test_invalid_parameters_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        MarketParams(**{field: value})
