"""Resample a candle file (the format of shared/data/README.md) into N-minute candles, for the
backtest's figures on longer candles from the shipped 1-minute series.

An N-minute candle is what an exchange would print for those minutes: the first open, the highest
high, the lowest low, the last close and the summed volume of the 1-minute candles inside it; a
window with no candle at all (no trading) is left out, a gap, as in the source.
Usage: python benchmarks/resample_candles.py IN.json MINUTES OUT.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def resample(rows: list[list], minutes: int) -> list[list]:
    width = minutes * 60_000
    out: dict[int, list] = {}
    for open_ms, o, h, low, c, volume in rows:
        start = open_ms - open_ms % width
        candle = out.get(start)
        if candle is None:
            out[start] = [start, o, h, low, c, volume]
        else:
            candle[2], candle[3] = max(candle[2], h), min(candle[3], low)
            candle[4], candle[5] = c, candle[5] + volume
    return [out[start] for start in sorted(out)]


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[1].isdigit() or int(argv[1]) < 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    rows = json.loads(Path(argv[0]).read_text())
    if any(b[0] <= a[0] for a, b in zip(rows, rows[1:])):
        print(f"{argv[0]}: candles are not sorted by open time without duplicates", file=sys.stderr)
        return 1
    Path(argv[2]).write_text(json.dumps(resample(rows, int(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
