"""Fuzz benchmark: 100,000 hostile payloads built from the CONTRACTS.md examples through every inbound codec.

Uses the same hypothesis strategies as tests/unit/test_codec_fuzz.py (which runs 3,000 cases in
`make test`). Prints how many cases ran, how many were accepted, how many crashed (any exception
other than InvalidMessage, or an accepted message that breaks the invariants of
tests/fuzzing.check_accepted; the first few are shown), and the dead-letter reasons.
Usage: python benchmarks/fuzz.py [--cases 100000] [--seed 1]
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msd.errors import InvalidMessage  # noqa: E402
from tests.fuzzing import CASES, check_accepted, hostile_body, hostile_headers, parse_case  # noqa: E402


def run_case(kind: str, example: bytes, n: int, rng_seed: int, stats: dict) -> None:
    @seed(rng_seed)
    @settings(max_examples=n, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(body=hostile_body(example), headers=hostile_headers)
    def one(body, headers):
        stats["cases"] += 1
        try:
            message = parse_case(kind, body, headers)
        except InvalidMessage as exc:
            stats["reasons"][exc.reason] += 1
            return
        except Exception:                               # a crash: the consumer would lose the batch
            stats["crashes"].append((kind, body[:300], traceback.format_exc(limit=3)))
            return
        try:
            check_accepted(kind, message)
        except AssertionError:
            stats["crashes"].append((kind, body[:300], "accepted but invalid:\n" + traceback.format_exc(limit=3)))
            return
        stats["accepted"] += 1

    one()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    stats = {"cases": 0, "accepted": 0, "crashes": [], "reasons": Counter()}
    per_case = -(-args.cases // len(CASES))
    started = time.perf_counter()
    for index, (kind, name, example) in enumerate(CASES):
        run_case(kind, example, per_case, args.seed * 1000 + index, stats)
    elapsed = time.perf_counter() - started
    rejected = sum(stats["reasons"].values())
    print(f"cases {stats['cases']:,} in {elapsed:.1f}s ({stats['cases'] / elapsed:,.0f}/s) over {len(CASES)} "
          f"CONTRACTS examples; accepted {stats['accepted']:,}; dead-lettered {rejected:,}; "
          f"crashes {len(stats['crashes'])}")
    print("dead-letter reasons: " + ", ".join(f"{r} {n:,}" for r, n in stats["reasons"].most_common()))
    for kind, body, trace in stats["crashes"][:5]:
        print(f"--- crash in {kind} codec, body {body!r}\n{trace}")
    return 1 if stats["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
