"""Candle files (format of shared/data/README.md): read, checked, and cut to a time range.

A file is a JSON list of `[open_time_epoch_ms, open, high, low, close, volume]`, oldest first;
bars msd recorded (msd.market_bars) come in as rows and are checked the same way.
Bad input is refused with the file, the entry and its line: unsorted or duplicate times,
non-positive or non-finite prices, high below low, open or close outside [low, high], negative
volume. Missing minutes (gaps) and zero-volume minutes are kept as facts: the replay treats
them as no-trade periods and the report counts them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from msd.errors import MsdError
from msd.values.parsing import finite_decimal

MINUTE_MS = 60_000


class CandleError(MsdError):
    """A candle file msd cannot replay; the message names the file, the entry and its line."""


@dataclass(frozen=True)
class Candle:
    open_time: datetime            # aware UTC
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    @property
    def traded(self) -> bool:
        return self.volume > 0


@dataclass(frozen=True)
class Series:
    """One asset's candles; `length` is the candle length (the shortest spacing)."""
    asset: str
    path: str
    candles: tuple[Candle, ...]
    length: timedelta

    @property
    def gaps(self) -> int:
        """Missing candles between the first and the last."""
        if not self.candles:
            return 0
        span = self.candles[-1].open_time - self.candles[0].open_time
        return int(span / self.length) + 1 - len(self.candles)

    @property
    def zero_volume(self) -> int:
        return sum(1 for c in self.candles if not c.traded)


def _entries(text: str, path: str) -> list[tuple[int, object]]:
    """The list's elements with the line each starts on."""
    decoder, pos = json.JSONDecoder(), 0
    length = len(text)

    def skip(p: int) -> int:
        while p < length and text[p] in " \t\r\n":
            p += 1
        return p

    pos = skip(pos)
    if pos >= length or text[pos] != "[":
        raise CandleError(f"{path}: line 1: expected a JSON list of candles")
    pos = skip(pos + 1)
    entries: list[tuple[int, object]] = []
    line, counted = 1, 0
    while pos < length and text[pos] != "]":
        line, counted = line + text.count("\n", counted, pos), pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise CandleError(f"{path}: entry {len(entries) + 1} (line {line}): not JSON: {exc.msg}") from None
        entries.append((line, value))
        pos = skip(pos)
        if pos < length and text[pos] == ",":
            pos = skip(pos + 1)
    return entries


def _candle(value: object, where: str) -> Candle:
    if not isinstance(value, list) or len(value) < 6:
        raise CandleError(f"{where}: expected [open_time_ms, open, high, low, close, volume], got {value!r}")
    stamp = value[0]
    if isinstance(stamp, bool) or not isinstance(stamp, int):
        raise CandleError(f"{where}: open time {stamp!r} is not an integer of epoch milliseconds")
    numbers = [finite_decimal(x) for x in value[1:6]]
    if any(n is None for n in numbers):
        raise CandleError(f"{where}: open, high, low, close and volume must be finite numbers, got {value[1:6]!r}")
    o, h, l, c, v = numbers
    if min(o, h, l, c) <= 0:
        raise CandleError(f"{where}: prices must be > 0, got open {o} high {h} low {l} close {c}")
    if h < l:
        raise CandleError(f"{where}: high {h} is below low {l}")
    if not (l <= o <= h and l <= c <= h):
        raise CandleError(f"{where}: open {o} or close {c} lies outside [low {l}, high {h}]")
    if v < 0:
        raise CandleError(f"{where}: volume {v} is negative")
    return Candle(datetime.fromtimestamp(stamp / 1000, timezone.utc), o, h, l, c, v)


def series_from_rows(asset: str, source: str, rows: list[tuple]) -> Series:
    """Bars msd recorded (msd.market_bars: minute, open, high, low, close, volume), checked as a
    file's candles are; errors name the source and the bar's minute."""
    candles: list[Candle] = []
    for minute, *values in rows:
        stamp = int(minute.timestamp() * 1000)
        candles.append(_candle([stamp, *values], f"{source}: bar {minute.isoformat()}"))
    return _series(asset, source, candles)


def load_series(path: str | Path, asset: str) -> Series:
    """Read and check one candle file for `asset` (CandleError names the file and line)."""
    name = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CandleError(f"{name}: cannot be read: {exc.strerror}") from None
    candles: list[Candle] = []
    for index, (line, value) in enumerate(_entries(text, name), start=1):
        where = f"{name}: entry {index} (line {line})"
        candle = _candle(value, where)
        if candles and candle.open_time <= candles[-1].open_time:
            what = "duplicate" if candle.open_time == candles[-1].open_time else "out of order"
            raise CandleError(f"{where}: {what} open time {candle.open_time.isoformat()} "
                              f"(previous {candles[-1].open_time.isoformat()})")
        candles.append(candle)
    return _series(asset, name, candles)


def _series(asset: str, name: str, candles: list[Candle]) -> Series:
    if len(candles) < 2:
        raise CandleError(f"{name}: needs at least 2 candles, has {len(candles)}")
    spacings = sorted(b.open_time - a.open_time for a, b in zip(candles, candles[1:]))
    length = spacings[0]              # the shortest spacing: gaps only make spacings longer
    if length < timedelta(minutes=1) or length % timedelta(minutes=1):
        raise CandleError(f"{name}: candle length {length} is not a whole number of minutes")
    if any(s % length for s in spacings):
        raise CandleError(f"{name}: candles are not on a {length} grid")
    return Series(asset, name, tuple(candles), length)


def parse_timerange(text: str) -> tuple[datetime | None, datetime | None]:
    """freqtrade's `YYYYMMDD-YYYYMMDD` (either side may be empty), UTC; the end is exclusive."""
    start_text, sep, end_text = text.partition("-")
    if not sep:
        raise CandleError(f"--timerange {text!r}: expected START-END as YYYYMMDD-YYYYMMDD (either may be empty)")

    def day(part: str) -> datetime | None:
        if not part:
            return None
        try:
            return datetime.strptime(part, "%Y%m%d").replace(tzinfo=timezone.utc)
        except ValueError:
            raise CandleError(f"--timerange {text!r}: {part!r} is not a date YYYYMMDD") from None
    start, end = day(start_text), day(end_text)
    if start and end and end <= start:
        raise CandleError(f"--timerange {text!r}: the end is not after the start")
    return start, end


def cut(series: Series, start: datetime | None, end: datetime | None) -> Series:
    kept = tuple(c for c in series.candles if (start is None or c.open_time >= start)
                 and (end is None or c.open_time < end))
    return Series(series.asset, series.path, kept, series.length)


def grid_start(moment: datetime, origin: datetime, step: timedelta) -> datetime:
    """The first moment on the grid of `origin` every `step` at or after `moment` (a candle's
    open, an exits verification pass)."""
    behind = (moment - origin) % step
    return moment if not behind else moment + (step - behind)
