"""Fuzz benchmark: 100,000 hostile payloads built from the CONTRACTS.md examples through every
inbound codec, and 100,000 position histories through the exit evaluation.

Codecs: the same hypothesis strategies as tests/unit/test_codec_fuzz.py (3,000 cases in
`make test`). Prints how many cases ran, how many were accepted, how many crashed (any exception
other than InvalidMessage, or an accepted message that breaks the invariants of
tests/fuzzing.check_accepted; the first few are shown), and the dead-letter reasons.

Exit evaluation: the histories of tests/exit_fuzzing.py (2,000 cases in `make test`, via
tests/unit/test_exit_fuzz.py). Prints cases and steps, crashes (any exception), invariant
violations (the first few of each shown), the exits decided by reason and the evaluations that
decided no exit, by what held it (None: no rule fired).
Usage: python benchmarks/fuzz.py [--cases 100000] [--exit-cases 100000] [--seed 1] [--only codecs|exits]
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
from tests.exit_fuzzing import InvariantViolation, Replay, exit_cases  # noqa: E402
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


def fuzz_exits(n: int, rng_seed: int) -> dict:
    stats = {"cases": 0, "outcomes": Counter(), "crashes": [], "violations": []}

    @seed(rng_seed)
    @settings(max_examples=n, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=exit_cases())
    def one(case):
        stats["cases"] += 1
        try:
            stats["outcomes"].update(Replay(case).run())
        except InvariantViolation as exc:
            stats["violations"].append((str(exc), case, traceback.format_exc(limit=4)))
        except Exception:                               # a crash: the exits role would skip the position
            stats["crashes"].append((case, traceback.format_exc(limit=4)))

    started = time.perf_counter()
    one()
    stats["elapsed"] = time.perf_counter() - started
    return stats


def report_exits(stats: dict) -> int:
    outcomes, elapsed = stats["outcomes"], stats["elapsed"]
    by = {prefix: Counter({k.split(":", 1)[1]: n for k, n in outcomes.items() if k.startswith(prefix + ":")})
          for prefix in ("exit", "held")}
    print(f"exit evaluation: cases {stats['cases']:,} ({outcomes['steps']:,} steps) in {elapsed:.1f}s "
          f"({stats['cases'] / elapsed:,.0f} cases/s); crashes {len(stats['crashes'])}; "
          f"invariant violations {len(stats['violations'])}")
    for prefix, title in (("exit", "exits decided by reason"), ("held", "evaluations without an exit, by held")):
        print(f"{title}: " + (", ".join(f"{r} {n:,}" for r, n in by[prefix].most_common()) or "none"))
    for what, case, trace in stats["violations"][:3]:
        print(f"--- invariant violated: {what}\n{case!r}\n{trace}")
    for case, trace in stats["crashes"][:3]:
        print(f"--- crash in the exit evaluation\n{case!r}\n{trace}")
    return 1 if stats["crashes"] or stats["violations"] else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--exit-cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=("codecs", "exits"))
    args = parser.parse_args()
    failed = 0
    if args.only != "exits":
        failed |= fuzz_codecs(args.cases, args.seed)
    if args.only != "codecs":
        failed |= report_exits(fuzz_exits(args.exit_cases, args.seed))
    return failed


def fuzz_codecs(cases: int, rng_seed: int) -> int:
    stats = {"cases": 0, "accepted": 0, "crashes": [], "reasons": Counter()}
    per_case = -(-cases // len(CASES))
    started = time.perf_counter()
    for index, (kind, name, example) in enumerate(CASES):
        run_case(kind, example, per_case, rng_seed * 1000 + index, stats)
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
