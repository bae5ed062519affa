"""The exit role's section of the config file, validated by the exit rules' own constructors,
and what the exit role reads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from msd.config import SectionContext
from msd.config.domain import Reads, built
from msd.config.reader import Section
from msd.errors import ConfigError
from msd.rules.config import ExitRules
from msd.values.bucket import TokenBucket
from msd.values.parsing import asset_symbol

# It publishes to signaller.signals_queue; both sections are applied live.
READS = Reads(frozenset({"database", "rabbitmq", "exits", "signaller", "supervisor"}),
              live=frozenset({"exits", "signaller"}))


@dataclass(frozen=True)
class ExitsConfig:
    fallback_after_s: float         # no position update for this long -> poll the positions table
    poll_interval_s: float
    strategy_id: str                # strategy_id carried by exit signals
    debounce_s: float               # a burst of updates for one position is coalesced to its latest
    debounce_max_delay_s: float     # ...but evaluated at least this often while the burst lasts
    asset_rate: TokenBucket         # exit signals per asset
    rules: ExitRules                # default rules
    per_asset: Mapping[str, ExitRules]
    in_flight_timeout_s: float = 60.0   # an exit whose effect is not seen this long is reported stalled
    disabled_assets: frozenset[str] = frozenset()   # per_asset.<ASSET>.enabled: false -> left alone
    max_signal_age_s: float = 60.0  # an unsent exit older than this expires and is decided again

    def rules_for(self, asset: str) -> ExitRules:
        return self.per_asset.get(asset, self.rules)

    def enabled_for(self, asset: str) -> bool:
        return asset not in self.disabled_assets


def exits_section(s: Section, context: SectionContext) -> ExitsConfig:
    rate = s.section("asset_rate")
    rules_raw = s.raw("rules", DEFAULT_EXIT_RULES)
    rules = _exit_rules(rules_raw, "exits.rules")
    per_asset, disabled = _per_asset(s.raw("per_asset", {}) or {}, rules)
    cfg = ExitsConfig(
        fallback_after_s=s.number("fallback_after_s", 30.0, lo=0.1, hi=86400),
        poll_interval_s=s.number("poll_interval_s", 5.0, lo=0.1, hi=3600),
        strategy_id=s.string("strategy_id", "exit-engine"),
        debounce_s=s.number("debounce_s", 0.05, lo=0.0, hi=60),
        debounce_max_delay_s=s.number("debounce_max_delay_s", 0.25, lo=0.0, hi=600),
        asset_rate=built(lambda: TokenBucket(
            rate_per_s=rate.number("rate_per_s", 1.0, lo=0.0, lo_open=True), burst=rate.integer("burst", 3, lo=1),
            path="exits.asset_rate")),
        rules=rules,
        per_asset=per_asset,
        in_flight_timeout_s=s.number("in_flight_timeout_s", 60.0, lo=0.1, hi=86400),
        disabled_assets=disabled,
        max_signal_age_s=s.number("max_signal_age_s", 60.0, lo=1, hi=86400),
    )
    rate.reject_unknown()
    if cfg.debounce_max_delay_s < cfg.debounce_s:
        raise ConfigError("exits.debounce_max_delay_s", cfg.debounce_max_delay_s,
                          f"a number >= exits.debounce_s ({cfg.debounce_s})")
    s.reject_unknown()
    return cfg


def _exit_rules(raw: Any, path: str) -> ExitRules:
    return built(lambda: ExitRules.from_mapping(raw, path))


def _per_asset(raw: Any, default: ExitRules) -> tuple[dict[str, ExitRules], frozenset[str]]:
    """`per_asset.<ASSET>`: exit rules replacing `rules` for that asset, plus `enabled` (default
    true; false leaves the asset's positions alone, e.g. ones msd did not open). A mapping with
    only `enabled: true` keeps the default rules."""
    if not isinstance(raw, Mapping):
        raise ConfigError("exits.per_asset", raw, "a mapping of asset to exit rules")
    rules, disabled = {}, set()
    for key, section in raw.items():
        path = f"exits.per_asset.{key}"
        # Positions carry uppercase assets (CONTRACTS §3.2): a `btcusdt` key would never match.
        asset = built(lambda key=key: asset_symbol(path, key))
        if asset in rules:
            raise ConfigError(path, key, f"an asset given once (another key is {asset} too)")
        if not isinstance(section, Mapping):
            raise ConfigError(path, section, "a mapping of exit rules (and enabled: true/false)")
        section = dict(section)
        enabled = section.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{path}.enabled", enabled, "true or false")
        if not enabled:
            disabled.add(asset)
        rules[asset] = _exit_rules(section, path) if section else default
    return rules, frozenset(disabled)


# Applied when exits.rules is absent: protective stops plus a two-step take-profit ladder.
DEFAULT_EXIT_RULES: Mapping[str, Any] = {
    "take_profit": {"steps": [{"at_pct": 3, "close": 0.5}, {"at_pct": 5, "close": 1.0}],
                    "breakeven_after_first_step": True},
    "stop_loss_pct": 2,
    "trailing": {"activation_pct": 1.5, "distance_pct": 0.8},
    "time_exit": {"max_hold_seconds": 86400, "min_profit_pct": 0},
    "cooldown_seconds": 60,
}
