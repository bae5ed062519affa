"""Reading the daemon's Prometheus histograms from a benchmark: what happened between two scrapes.

Percentiles from histogram buckets are estimates (linear within a bucket, as PromQL's
histogram_quantile); means are exact (sum / count).
"""
from __future__ import annotations

import math
import urllib.request
from collections import defaultdict
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Histogram:
    buckets: dict[float, float]     # upper bound -> cumulative count
    total: float = 0.0
    count: float = 0.0

    def minus(self, earlier: "Histogram | None") -> "Histogram":
        if earlier is None:
            return self
        return Histogram({le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
                         self.total - earlier.total, self.count - earlier.count)

    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        if not self.count:
            return math.nan
        rank, lower, below = q * self.count, 0.0, 0.0
        for le in sorted(self.buckets):
            if self.buckets[le] >= rank:
                if math.isinf(le):
                    return lower
                return lower + (le - lower) * (rank - below) / max(self.buckets[le] - below, 1e-12)
            lower, below = le, self.buckets[le]
        return lower


def scrape(port: int, name: str, label: str) -> dict[str, Histogram]:
    """The histogram `name` of the daemon on `port`, one per value of `label`."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found: dict[str, Histogram] = defaultdict(lambda: Histogram({}))
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            key = sample.labels.get(label, "")
            if sample.name.endswith("_bucket"):
                found[key].buckets[float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_sum"):
                found[key].total = sample.value
            elif sample.name.endswith("_count"):
                found[key].count = sample.value
    return dict(found)


def between(before: dict[str, Histogram], after: dict[str, Histogram]) -> dict[str, Histogram]:
    return {key: hist.minus(before.get(key)) for key, hist in after.items()}


def counter(port: int, name: str) -> dict[tuple, float]:
    """The counter `name` (without _total) by its label values."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values: dict[tuple, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    values[tuple(sorted(sample.labels.items()))] = sample.value
    return values
