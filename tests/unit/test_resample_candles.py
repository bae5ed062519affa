"""benchmarks/resample_candles.py: N-minute candles as an exchange would print them."""
from benchmarks.resample_candles import resample

M = 60_000


def test_five_minute_candle_takes_first_open_extremes_last_close_and_summed_volume():
    rows = [[0, 10, 12, 9, 11, 1.0], [M, 11, 15, 10, 14, 2.0], [4 * M, 14, 14, 8, 9, 0.5],
            [5 * M, 9, 10, 9, 10, 3.0]]
    assert resample(rows, 5) == [[0, 10, 15, 8, 9, 3.5], [5 * M, 9, 10, 9, 10, 3.0]]


def test_a_window_without_any_candle_stays_a_gap():
    rows = [[0, 1, 1, 1, 1, 1.0], [10 * M, 2, 2, 2, 2, 1.0]]
    assert [r[0] for r in resample(rows, 5)] == [0, 10 * M]
