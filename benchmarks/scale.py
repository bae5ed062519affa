"""Scale: N strategies x M assets through the real daemon, at 200 ticks/s spread over the assets.

Every strategy trades every asset on its market updates (trigger: market, heuristic random),
with token buckets and the exposure cap sized so that they never bind and conflicts allowed,
so each decision that is due becomes a signal. Two modes:
- volume: five strategies signal, on three assets, once per --active-frequency seconds each
  (7.5 signals/s in bursts of up to 15), at every scale; the others trade every asset and are
  evaluated on every update but are not due again within the run (their frequency_s is a day):
  what more strategies and assets cost the path of the same signals;
- settings: every strategy may signal an asset once per --frequency seconds, so the signal
  volume grows with N x M (1.5/s at 5x3, 100/s at 50x20 with the default 10 s), and at 50x20
  the 50 strategies of an asset decide on the same tick: bursts of 50 signals.
A decision is an evaluation of a strategy on an asset, including one that stops at the
frequency check (not due yet).

Printed per configuration: tick -> signal p50/p95/p99 (each tick has a unique price per asset;
a signal's market_data_snapshot.price names the tick it was decided on), ticks dropped (sent
minus applied by the signaller, and the consumer's own drop counter), ticks coalesced (counted
by the daemon), per-strategy decisions checked against the updates of its assets (every
strategy must decide on every update it did not see coalesced) and signals, msd's own
breakdown (msd_signal_path_seconds), and the process tree's RSS, PSS and CPU at idle and under
load. By default runs 5x3 then 50x20 in each mode and compares their p95 (target: within 20%).
Usage: python benchmarks/scale.py [--configs 5x3,50x20] [--modes volume,settings] [--seconds 30]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psycopg2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import feed  # noqa: E402
from benchmarks.daemon_metrics import between, counter, scrape  # noqa: E402
from msd.store.neighbours import create_neighbour_tables  # noqa: E402
from tests.fixtures.pg import create_database, drop_database  # noqa: E402
from tests.fixtures.rabbit import amqp_url, create_vhost, delete_vhost  # noqa: E402
from tests.integration.daemon import Daemon, base_config, wait_for  # noqa: E402

COINS = ("BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "AVAX", "LINK", "DOT", "LTC", "BCH", "TRX", "ATOM", "NEAR",
         "APT", "ARB", "OP", "SUI", "FIL", "ETC")
TARGET_RATIO = 1.2
ACTIVE, ACTIVE_ASSETS = 5, 3    # the strategies that signal in `volume` mode, on that many assets
QUIET_S = 86400.0       # frequency_s of the others: evaluated on every update, never due again in the run
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


class Receiver:
    """Reads the signals: each one's (asset, price) and arrival, and the signals per strategy."""

    def __init__(self, url: str):
        self.received: list[tuple[tuple[str, float], float]] = []
        self.per_strategy: Counter[str] = Counter()
        self.reader = feed.SignalReader(url, self.take)

    def take(self, signal: dict, at: float) -> None:
        self.received.append(((signal["asset"], round(signal["market_data_snapshot"]["price"], 2)), at))
        self.per_strategy[signal["strategy_id"]] += 1

    @property
    def last_at(self) -> float:
        return self.reader.last_at


def publish_ticks(url: str, assets: list[str], rate: float, seconds: float, start_index: int) -> dict:
    """Round-robin over the assets at `rate` ticks/s; every price unique per asset."""
    return feed.publish_ticks(url, rate, seconds, lambda i: (assets[i % len(assets)],
                                                             round(1000 + (start_index + i // len(assets)) * 0.01, 2)))


# ----- the process tree ---------------------------------------------------------------------

def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS_PER_S
    except (OSError, IndexError, ValueError):
        return 0.0


def memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


class TreeMeter:
    """CPU (% of one core) over a window, and RSS/PSS (peak over samples) of the daemon's tree."""

    def __init__(self, root: int):
        self.root = root

    def start(self) -> None:
        self.pids = tree(self.root)
        self.cpu0 = {pid: cpu_seconds(pid) for pid in self.pids}
        self.t0 = time.monotonic()
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            rss, pss = zip(*(memory(pid) for pid in self.pids))
            self.peak_rss, self.peak_pss = max(self.peak_rss, sum(rss)), max(self.peak_pss, sum(pss))
            if self._stop.wait(0.5):
                return

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        wall = time.monotonic() - self.t0
        cpu = sum(cpu_seconds(pid) - self.cpu0[pid] for pid in self.pids)
        return {"cpu_pct": 100 * cpu / wall, "rss_mb": self.peak_rss / 1e6, "pss_mb": self.peak_pss / 1e6,
                "processes": len(self.pids)}


# ----- one configuration --------------------------------------------------------------------

def plan(n_strategies: int, assets: list[str], mode: str, args) -> list[tuple[list[str], float]]:
    """(assets, warmup.frequency_s) per strategy. `settings`: every strategy on every asset with
    --frequency (signal volume grows with N x M); `volume`: the first ACTIVE strategies on the
    first ACTIVE_ASSETS assets with --active-frequency, the others on every asset but not due
    again within the run, so the signals (pairs, frequency, bursts) are the same at every scale."""
    if mode == "settings":
        return [(assets, args.frequency)] * n_strategies
    return [(assets[:ACTIVE_ASSETS], args.active_frequency) if i < ACTIVE else (assets, QUIET_S)
            for i in range(n_strategies)]


def config_for(n_strategies: int, n_assets: int, mode: str, args) -> tuple[list[str], dict]:
    assets = [f"{coin}USDT" for coin in COINS[:n_assets]]
    strategies = [{"id": f"s{i:02d}", "assets": own, "trigger": "market", "seed": i,
                   "rate": {"rate_per_s": 100000, "burst": 100000},
                   "warmup": {"frequency_s": frequency, "heuristic": "random", "min_amount_usdt": 10,
                              "max_amount_usdt": 20, "max_exposure_usdt": 10 ** 12}}
                  for i, (own, frequency) in enumerate(plan(n_strategies, assets, mode, args))]
    return assets, {"strategies": strategies, "global_rate": {"rate_per_s": 100000, "burst": 100000},
                    "conflicts": {"policy": "allow"}}


def run_config(n_strategies: int, n_assets: int, mode: str, args) -> dict:
    assets, signaller = config_for(n_strategies, n_assets, mode, args)
    dsn, vhost = create_database("msd_scale"), create_vhost("msd_scale")
    with psycopg2.connect(dsn) as conn:
        create_neighbour_tables(conn)
    url = amqp_url(vhost)
    with tempfile.TemporaryDirectory() as tmp:
        config = base_config(Path(tmp), dsn, url, signaller=signaller, logging={"level": "WARNING"})
        daemon = Daemon(Path(tmp), config)
        receiver = Receiver(url)
        port = config["metrics"]["port"]
        try:
            daemon.start()
            daemon.wait_running("signaller")
            receiver.reader.start()
            receiver.reader.ready.wait(10)
            meter = TreeMeter(daemon.proc.pid)
            meter.start()
            time.sleep(args.idle_seconds)
            idle = meter.stop()
            publish_ticks(url, assets, 20, 2, 0)             # every pair signals once: the first burst
            wait_quiet(receiver)
            receiver.received.clear()
            receiver.per_strategy.clear()
            before = snapshot(daemon, port)
            meter.start()
            sent = publish_ticks(url, assets, args.rate, args.seconds, 10 ** 6)
            wait_for(lambda: applied(daemon) >= before["applied"] + len(sent), 120, interval=0.5,
                     what="every tick applied by the signaller")
            wait_quiet(receiver)
            load = meter.stop()
            after = snapshot(daemon, port)
            own = {st["id"]: st["assets"] for st in signaller["strategies"]}
            return {**result(n_strategies, assets, own, sent, receiver, before, after, idle, load, args),
                    "mode": mode}
        finally:
            receiver.reader.stop.set()
            daemon.close()
            drop_database(dsn)
            delete_vhost(vhost)


def applied(daemon) -> int:
    return daemon.role("signaller")["status"].get("market_updates", 0)


def wait_quiet(receiver: Receiver, quiet_s: float = 3.0) -> None:
    """Until no signal arrived for `quiet_s` (status and signals travel about once a second)."""
    wait_for(lambda: time.time() - receiver.last_at >= quiet_s, 120, interval=0.2, what="signals to stop")


def snapshot(daemon, port: int) -> dict:
    time.sleep(1.5)      # the status travels with the heartbeats: let the last turn's counts arrive
    signaller = daemon.role("signaller")["status"]
    consumer = daemon.role("consumer")["status"]
    return {"applied": signaller.get("market_updates", 0),
            "by_asset": dict(signaller.get("market_updates_by_asset", {})),
            "coalesced": dict(signaller.get("coalesced_by_asset", {})),
            "decisions": {sid: s["decisions"] for sid, s in signaller["strategies"].items()},
            "sent": {sid: s["sent"] for sid, s in signaller["strategies"].items()},
            "dropped_reasons": {sid: dict(s["dropped"]) for sid, s in signaller["strategies"].items()},
            "consumer_dropped": consumer.get("dropped", 0),
            "stages": scrape(port, "msd_signal_path_seconds", "stage"),
            "queue_drops": sum(counter(port, "msd_dataplane_dropped").values())}


def result(n_strategies: int, assets: list[str], own: dict[str, list[str]], sent: dict, receiver: Receiver,
           before: dict, after: dict, idle: dict, load: dict, args) -> dict:
    def delta(key: str, name: str) -> int:
        return after[key].get(name, 0) - before[key].get(name, 0)
    latency = np.array([(at - sent[key]) * 1000 for key, at in receiver.received if key in sent])
    sent_by_asset = Counter(asset for asset, _ in sent)
    applied_by_asset = {a: delta("by_asset", a) for a in assets}
    coalesced_by_asset = {a: delta("coalesced", a) for a in assets}
    decided_on = {a: applied_by_asset[a] - coalesced_by_asset[a] for a in assets}
    decisions = {sid: delta("decisions", sid) for sid in after["decisions"]}
    expected = {sid: sum(decided_on[a] for a in own[sid]) for sid in own}
    wrong = {sid: (n, expected[sid]) for sid, n in decisions.items() if n != expected[sid]}
    return {
        "config": f"{n_strategies}x{len(assets)}", "ticks": len(sent), "signals": len(latency),
        "p50": float(np.percentile(latency, 50)) if len(latency) else float("nan"),
        "p95": float(np.percentile(latency, 95)) if len(latency) else float("nan"),
        "p99": float(np.percentile(latency, 99)) if len(latency) else float("nan"),
        "dropped": sum(sent_by_asset[a] - applied_by_asset[a] for a in assets),
        "consumer_dropped": after["consumer_dropped"] - before["consumer_dropped"],
        "queue_drops": after["queue_drops"] - before["queue_drops"],
        "coalesced": sum(coalesced_by_asset.values()), "decided_on": sum(decided_on.values()),
        "decisions_total": sum(decisions.values()),
        "decisions": decisions, "wrong_decisions": wrong,
        "signals_by_strategy": dict(receiver.per_strategy),
        "not_sent": {sid: r for sid in after["dropped_reasons"]
                     if (r := {k: v - before["dropped_reasons"].get(sid, {}).get(k, 0)
                               for k, v in after["dropped_reasons"][sid].items()
                               if v - before["dropped_reasons"].get(sid, {}).get(k, 0)})},
        "stages": between(before["stages"], after["stages"]),
        "idle": idle, "load": load, "seconds": args.seconds,
    }


def report(r: dict) -> None:
    print(f"\n== {r['config']} (strategies x assets), {r['mode']} mode: {r['ticks']} ticks in {r['seconds']:g} s; "
          f"{r['signals']} signals ({r['signals'] / r['seconds']:.1f}/s)")
    print(f"tick published -> signal received: p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, p99 {r['p99']:.1f} ms")
    print(f"ticks dropped: {r['dropped']} (sent minus applied by the signaller); consumer drops "
          f"{r['consumer_dropped']}, data-plane drop counter {r['queue_drops']:.0f}")
    print(f"ticks coalesced into a newer tick of the same asset (counted by the daemon): {r['coalesced']}")
    ok = ("every strategy decided on every update of its assets" if not r["wrong_decisions"]
          else f"MISMATCH (strategy: (decisions, updates of its assets)) {r['wrong_decisions']}")
    print(f"decisions: {r['decisions_total']} in all; {r['decided_on']} updates to decide on (applied minus "
          f"coalesced); {ok}")
    counts = sorted(r["signals_by_strategy"].values())
    if counts:
        print(f"signals per strategy: min {counts[0]}, median {counts[len(counts) // 2]}, max {counts[-1]} "
              f"over {len(counts)} strategies" + (f"; {dict(sorted(r['signals_by_strategy'].items()))}"
                                                  if len(counts) <= 5 else ""))
    if r["not_sent"]:
        print(f"evaluations without a signal, by reason: {r['not_sent']}")
    stages = r["stages"]
    if stages:
        print("msd's breakdown, mean/~p95 ms: " + ", ".join(
            f"{name} {h.mean() * 1000:.2f}/{h.quantile(0.95) * 1000:.2f}" for name, h in stages.items() if h.count))
    for phase in ("idle", "load"):
        m = r[phase]
        print(f"process tree ({m['processes']} processes) {phase}: CPU {m['cpu_pct']:.0f}% of one core, "
              f"RSS {m['rss_mb']:.0f} MB (PSS {m['pss_mb']:.0f} MB), peak of samples")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="5x3,50x20", help="comma-separated NxM")
    parser.add_argument("--modes", default="volume,settings",
                        help="volume: the same signal volume at every scale; settings: the same strategy settings")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--frequency", type=float, default=10.0, help="settings mode: every strategy's frequency_s")
    parser.add_argument("--active-frequency", type=float, default=2.0,
                        help="volume mode: frequency_s of the five strategies that signal")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    results = []
    for mode in args.modes.split(","):
        for spec in args.configs.split(","):
            n, m = (int(x) for x in spec.lower().split("x"))
            results.append(run_config(n, m, mode, args))
            report(results[-1])
    for r in results:
        print(f"SUMMARY scale {r['config']} {r['mode']}: p95 {r['p95']:.1f} ms, p50 {r['p50']:.1f}, "
              f"p99 {r['p99']:.1f}; {r['signals']} signals; ticks dropped {r['dropped']}; coalesced {r['coalesced']}; "
              f"decisions {'complete' if not r['wrong_decisions'] else 'INCOMPLETE'}; RSS idle "
              f"{r['idle']['rss_mb']:.0f} MB load {r['load']['rss_mb']:.0f} MB; CPU idle {r['idle']['cpu_pct']:.0f}% "
              f"load {r['load']['cpu_pct']:.0f}%")
    for mode in args.modes.split(","):
        pair = [r for r in results if r["mode"] == mode]
        if len(pair) == 2:
            ratio = pair[1]["p95"] / pair[0]["p95"]
            print(f"SUMMARY scale ratio ({mode} mode): p95 {pair[1]['config']} / {pair[0]['config']} = {ratio:.2f} "
                  f"(target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'MISSED'}); "
                  f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
