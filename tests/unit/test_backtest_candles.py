"""Bad candle files get a clear error naming the file, the entry and its line; gaps and
zero-volume minutes are kept and counted (msd.backtest.candles)."""
import json

import pytest

from msd.backtest.candles import CandleError, load_series, parse_timerange

GOOD = [[1700000000000, 1, 2, 0.5, 1.5, 10], [1700000060000, 1.5, 2, 1, 1.2, 0], [1700000180000, 1.2, 1.3, 1.1, 1.2, 5]]


def write(tmp_path, rows, text=None):
    path = tmp_path / "c.json"
    path.write_text(text if text is not None else json.dumps(rows))
    return path


def test_gaps_and_zero_volume_are_counted(tmp_path):
    series = load_series(write(tmp_path, GOOD), "BTCUSDT")
    assert (len(series.candles), series.gaps, series.zero_volume) == (3, 1, 1)


@pytest.mark.parametrize("rows, message", [
    ([GOOD[1], GOOD[0]], "entry 2 (line 3): out of order"),
    ([GOOD[0], GOOD[0]], "entry 2 (line 3): duplicate"),
    ([GOOD[0], [1700000060000, 0, 2, 1, 1, 1]], "entry 2 (line 3): prices must be > 0"),
    ([GOOD[0], [1700000060000, 1.5, 1, 2, 1.5, 1]], "entry 2 (line 3): high 1 is below low 2"),
    ([GOOD[0], [1700000060000, 3, 2, 1, 1.5, 1]], "open 3 or close 1.5 lies outside"),
    ([GOOD[0], [1700000060000, 1, 2, 1, "x", 1]], "must be finite numbers"),
    ([GOOD[0], [1700000060000, 1, 2]], "expected [open_time_ms"),
])
def test_bad_input_names_the_file_and_the_line(tmp_path, rows, message):
    text = "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]"
    path = write(tmp_path, None, text)
    with pytest.raises(CandleError) as err:
        load_series(path, "BTCUSDT")
    assert str(path) in str(err.value) and message in str(err.value)


def test_timerange_is_checked():
    start, end = parse_timerange("20171105-20171106")
    assert (end - start).days == 1
    assert parse_timerange("20171105-")[1] is None
    with pytest.raises(CandleError):
        parse_timerange("2017-11-05")
    with pytest.raises(CandleError):
        parse_timerange("20171106-20171105")
