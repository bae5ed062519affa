"""The signaller's section of the config file, validated by the strategies' own constructors,
and what the signaller reads."""
from __future__ import annotations

from dataclasses import dataclass

from msd.config import SectionContext
from msd.config.domain import Reads, built
from msd.config.reader import Section
from msd.errors import ConfigError
from msd.strategies.conflicts import ConflictRules
from msd.strategies.engine import SharedLimits
from msd.strategies.params import StrategyParams
from msd.values.bucket import TokenBucket

# It runs the retraining triggers, so it reads `trainer` too; both are applied live.
READS = Reads(frozenset({"database", "rabbitmq", "signaller", "trainer", "supervisor"}),
              live=frozenset({"signaller", "trainer"}))


@dataclass(frozen=True)
class SignallerConfig:
    signals_queue: str
    max_data_age_s: float
    global_rate: TokenBucket        # across all strategies
    conflicts: ConflictRules
    strategies: tuple[StrategyParams, ...]
    republish_interval_s: float     # how often unsent outbox signals are retried
    max_signal_age_s: float         # an unsent warm-up/model signal older than this expires unsent

    @property
    def limits(self) -> SharedLimits:
        return SharedLimits(global_rate=self.global_rate, conflicts=self.conflicts)


def signaller_section(s: Section, context: SectionContext) -> SignallerConfig:
    cfg = SignallerConfig(
        signals_queue=s.string("signals_queue", "model-service.trading_signals"),
        max_data_age_s=s.number("max_data_age_s", 30.0, lo=0.1, hi=86400),
        global_rate=built(lambda: TokenBucket.from_mapping(
            s.raw("global_rate", {"rate_per_s": 1.0, "burst": 10}), "signaller.global_rate")),
        conflicts=built(lambda: ConflictRules.from_mapping(s.raw("conflicts", {}), "signaller.conflicts")),
        strategies=_strategies(s),
        republish_interval_s=s.number("republish_interval_s", 1.0, lo=0.05, hi=600),
        max_signal_age_s=s.number("max_signal_age_s", 60.0, lo=1, hi=86400),
    )
    s.reject_unknown()
    return cfg


def _strategies(s: Section) -> tuple[StrategyParams, ...]:
    raw = s.raw("strategies", [])
    if not isinstance(raw, list):
        raise ConfigError("signaller.strategies", raw, "a list of strategy mappings")
    strategies = tuple(built(lambda i=i, item=item: StrategyParams.from_mapping(item, f"signaller.strategies[{i}]"))
                       for i, item in enumerate(raw))
    seen: set[str] = set()
    for i, strategy in enumerate(strategies):
        if strategy.id in seen:
            raise ConfigError(f"signaller.strategies[{i}].id", strategy.id, "an id not used by another strategy")
        seen.add(strategy.id)
    return strategies
