"""The service configuration: one YAML file parsed once into frozen dataclasses.

`load_config(path)` is the only way to build a `Config`. It validates everything at the
boundary (errors name the key, the value and what is allowed), resolves secrets from the
environment or a credentials file, and never puts a secret in a repr or a log line.
`changed_roles(old, new)` is the reload diff: which roles must restart.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import yaml

from msd.config.reader import Section
from msd.errors import ConfigError
from msd.learning.triggers import Schedule
from msd.ml.params import OnlineParams, TrainingParams
from msd.rules.config import ExitRules
from msd.strategies.conflicts import ConflictRules
from msd.strategies.engine import SharedLimits
from msd.strategies.params import StrategyParams
from msd.values.parsing import InvalidValue
from msd.values.bucket import TokenBucket

ROLES = ("consumer", "signaller", "exits")
TRAINER = "trainer"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("auto", "json", "text")
WS_GATEWAY_DECLARE = ("passive", "exact")


@dataclass(frozen=True)
class ControlConfig:
    socket: Path


@dataclass(frozen=True)
class MetricsConfig:
    host: str
    port: int                  # 0 disables the HTTP endpoint


@dataclass(frozen=True)
class LoggingConfig:
    level: str
    format: str = "auto"            # auto = text on a terminal, JSON otherwise


@dataclass(frozen=True)
class DatabaseConfig:
    dsn: str                   # without password; see `url`
    connect_timeout_s: int          # libpq takes whole seconds
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The DSN with the secret filled in: pass to drivers, never log it."""
        return _with_password(self.dsn, self.password)


@dataclass(frozen=True)
class RabbitConfig:
    url_without_secret: str
    heartbeat_s: int
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The AMQP URL with the secret and `heartbeat` filled in: pass to pika, never log it."""
        parts = urlsplit(_with_password(self.url_without_secret, self.password))
        query = "&".join(q for q in parts.query.split("&") if q and not q.startswith("heartbeat="))
        query = f"{query}&heartbeat={self.heartbeat_s}" if query else f"heartbeat={self.heartbeat_s}"
        return urlunsplit(parts._replace(query=query))


@dataclass(frozen=True)
class SupervisorConfig:
    stop_deadline_s: float          # graceful stop budget before SIGKILL
    heartbeat_interval_s: float     # how often children report they are alive
    heartbeat_timeout_s: float      # silence longer than this = hung child, killed
    boot_timeout_s: float           # a child that never reports booted within this is killed
    backoff_initial_s: float
    backoff_max_s: float
    stable_after_s: float           # a child that ran this long resets its failure count
    fatal_after_failures: int       # consecutive fast failures before FATAL
    queue_maxsize: int              # bound of each data-plane queue


@dataclass(frozen=True)
class SubscriptionsConfig:
    """Optional: ask ws-gateway's REST API to stream the strategies' assets (FR-026)."""
    url: str | None                 # e.g. http://ws-gateway:4400; None = do not subscribe
    requesting_service: str
    retry_s: float
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DeadLetterConfig:
    """Bounds on `msd.dead_letters`, so that a flood of junk cannot fill the disk."""
    retention_days: float           # rows older than this are deleted
    max_stored_per_source: int      # beyond this many stored rows of one source, only counted
    max_payload_bytes: int          # a stored body is cut to this many bytes (its full length is kept)


@dataclass(frozen=True)
class ConsumerConfig:
    queues: Mapping[str, str]       # kind -> queue name
    ws_gateway_declare: str
    prefetch: int
    batch_max: int
    batch_wait_ms: float
    subscriptions: SubscriptionsConfig
    max_body_bytes: int             # larger bodies are dead-lettered before they are parsed
    max_future_s: float             # timestamps further ahead of our clock are implausible
    dead_letters: DeadLetterConfig


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

    def rules_for(self, asset: str) -> ExitRules:
        return self.per_asset.get(asset, self.rules)

    def enabled_for(self, asset: str) -> bool:
        return asset not in self.disabled_assets


@dataclass(frozen=True)
class QualityConfig:
    """Live quality watch of model-mode strategies (FR-021): the share of the last `window`
    labelled model signals whose call paid after costs; below `threshold` -> alert, retire the
    version, fall back and retrain. Calibration (mean confidence vs that pay rate) is tracked
    beside it."""
    threshold: float
    hysteresis: float
    min_samples: int
    window: int
    max_calibration_gap: float      # |mean confidence - pay rate| beyond this: miscalibrated


@dataclass(frozen=True)
class TrainerConfig:
    job: str                        # "module:function" run inside the trainer process
    timeout_s: float
    training: TrainingParams        # what a training run does (models_dir is absolute)
    schedule: Schedule | None       # periodic retraining, None = off
    data_threshold: int | None      # N new labelled executions since the last training, None = off
    quality: QualityConfig
    check_interval_s: float         # how often the signaller checks the triggers
    online: OnlineParams = OnlineParams()   # the online challenger


@dataclass(frozen=True)
class Config:
    source: Path
    control: ControlConfig
    metrics: MetricsConfig
    logging: LoggingConfig
    database: DatabaseConfig
    rabbitmq: RabbitConfig
    supervisor: SupervisorConfig
    consumer: ConsumerConfig
    signaller: SignallerConfig
    exits: ExitsConfig
    trainer: TrainerConfig

    def section_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self) if f.name != "source")


# Sections a running child applies without a restart (it is sent the new config instead).
LIVE_SECTIONS: Mapping[str, frozenset[str]] = {
    "signaller": frozenset({"signaller", "trainer"}),   # it runs the retraining triggers
    "exits": frozenset({"exits", "signaller"}),     # exits reads signaller.signals_queue
}

# Which config sections each child reads: a change to any of them restarts that child.
ROLE_SECTIONS: Mapping[str, frozenset[str]] = {
    "consumer": frozenset({"database", "rabbitmq", "consumer", "supervisor"}),
    "signaller": frozenset({"database", "rabbitmq", "signaller", "trainer", "supervisor"}),
    "exits": frozenset({"database", "rabbitmq", "exits", "signaller", "supervisor"}),
    TRAINER: frozenset({"database", "trainer"}),
}

CONSUMER_QUEUE_KINDS = ("order_events", "position_updates", "ticker", "orderbook", "trade", "kline")
DEFAULT_QUEUES = {
    "order_events": "order-manager.order_events",
    "position_updates": "position-manager.position_updated",
    "ticker": "ws-gateway.ticker",
    "orderbook": "ws-gateway.orderbook",
    "trade": "ws-gateway.trade",
    "kline": "ws-gateway.kline",
}


def load_config(path: str | os.PathLike, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve the YAML file at `path`. Raises ConfigError."""
    path = Path(path).resolve()
    env = os.environ if env is None else env
    root = Section(_read_yaml(path), "")
    secrets = _load_credentials(root.optional_string("credentials_file"), path.parent)
    cfg = Config(
        source=path,
        control=_control(root.section("control"), path.parent),
        metrics=_metrics(root.section("metrics")),
        logging=_logging(root.section("logging")),
        database=_database(root.section("database"), env, secrets),
        rabbitmq=_rabbitmq(root.section("rabbitmq"), env, secrets),
        supervisor=_supervisor(root.section("supervisor")),
        consumer=_consumer(root.section("consumer"), env, secrets),
        signaller=_signaller(root.section("signaller")),
        exits=_exits(root.section("exits")),
        trainer=_trainer(root.section("trainer"), path.parent),
    )
    root.reject_unknown()
    return cfg


def changed_sections(old: Config, new: Config) -> set[str]:
    return {name for name in old.section_names() if getattr(old, name) != getattr(new, name)}


def changed_roles(old: Config, new: Config) -> set[str]:
    """Roles (and the trainer) whose config sections differ between `old` and `new`."""
    changed = changed_sections(old, new)
    return {role for role, sections in ROLE_SECTIONS.items() if sections & changed}


def applies_live(role: str, old: Config, new: Config) -> bool:
    """True when every section of `role` that changed can be applied by the running child."""
    changed = changed_sections(old, new) & ROLE_SECTIONS[role]
    return bool(changed) and changed <= LIVE_SECTIONS.get(role, frozenset())


def _built(path: str, build, prefix: str = ""):
    """Run a domain validator; its InvalidValue becomes a ConfigError with the same key (under
    `prefix` when the validator names its fields bare), value and allowed range."""
    try:
        return build()
    except InvalidValue as exc:
        raise ConfigError(prefix + exc.key, exc.value, exc.allowed) from None


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("<file>", str(path), f"a readable file ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError("<file>", str(path), f"valid YAML (parse error at {where})") from None


def _load_credentials(name: str | None, base: Path) -> Mapping[str, str]:
    if name is None:
        return {}
    path = (base / name).resolve()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError("credentials_file", name, f"a readable YAML file of secrets ({exc})") from None
    if not isinstance(data, Mapping) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError("credentials_file", name, "a YAML mapping of names to string secrets")
    return data


def _secret(section: Section, env: Mapping[str, str], secrets: Mapping[str, str], key: str) -> str | None:
    """A secret named in the config: `<key>_env` names an env var, `<key>_key` a credentials-file key."""
    var = section.optional_string(f"{key}_env")
    cred = section.optional_string(f"{key}_key")
    if var and env.get(var):
        return env[var]
    if cred:
        if cred not in secrets:
            raise ConfigError(section.key_path(f"{key}_key"), cred, "a key present in credentials_file")
        return secrets[cred]
    return None


def _with_password(url: str, password: str | None) -> str:
    if not password:
        return url
    parts = urlsplit(url)
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _checked_url(section: Section, key: str, schemes: tuple[str, ...], default: str) -> str:
    value = section.string(key, default)
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(section.key_path(key), value, f"a URL with scheme {' or '.join(schemes)} and a host")
    if parts.password:
        raise ConfigError(section.key_path(key), "<redacted>",
                          "a URL without a password (put the secret in password_env or password_key)")
    return value


def _control(s: Section, base: Path) -> ControlConfig:
    # Relative paths are relative to the config file's directory, wherever msd is started from.
    sock = Path(s.string("socket", "../var/run/msd.sock"))
    cfg = ControlConfig(socket=(base / sock).resolve())
    s.reject_unknown()
    return cfg


def _logging(s: Section) -> LoggingConfig:
    cfg = LoggingConfig(level=s.choice("level", LOG_LEVELS, "INFO"), format=s.choice("format", LOG_FORMATS, "auto"))
    s.reject_unknown()
    return cfg


def _metrics(s: Section) -> MetricsConfig:
    cfg = MetricsConfig(host=s.string("host", "127.0.0.1"), port=s.integer("port", 9464, lo=0, hi=65535))
    s.reject_unknown()
    return cfg


def _database(s: Section, env: Mapping[str, str], secrets: Mapping[str, str]) -> DatabaseConfig:
    cfg = DatabaseConfig(
        dsn=_checked_url(s, "dsn", ("postgresql", "postgres"), "postgresql://postgres@127.0.0.1:5432/msd"),
        connect_timeout_s=s.integer("connect_timeout_s", 5, lo=1, hi=120),
        password=_secret(s, env, secrets, "password"),
    )
    s.reject_unknown()
    return cfg


def _rabbitmq(s: Section, env: Mapping[str, str], secrets: Mapping[str, str]) -> RabbitConfig:
    cfg = RabbitConfig(
        url_without_secret=_checked_url(s, "url", ("amqp", "amqps"), "amqp://guest@127.0.0.1:5672/%2F"),
        heartbeat_s=s.integer("heartbeat_s", 30, lo=0, hi=3600),
        password=_secret(s, env, secrets, "password"),
    )
    s.reject_unknown()
    return cfg


def _supervisor(s: Section) -> SupervisorConfig:
    cfg = SupervisorConfig(
        stop_deadline_s=s.number("stop_deadline_s", 10.0, lo=0.5, hi=600),
        heartbeat_interval_s=s.number("heartbeat_interval_s", 1.0, lo=0.05, hi=60),
        heartbeat_timeout_s=s.number("heartbeat_timeout_s", 15.0, lo=0.5, hi=3600),
        boot_timeout_s=s.number("boot_timeout_s", 60.0, lo=1, hi=3600),
        backoff_initial_s=s.number("backoff_initial_s", 0.1, lo=0.0, hi=60),
        backoff_max_s=s.number("backoff_max_s", 30.0, lo=0.0, hi=3600),
        stable_after_s=s.number("stable_after_s", 10.0, lo=0.1, hi=3600),
        fatal_after_failures=s.integer("fatal_after_failures", 5, lo=1, hi=1000),
        queue_maxsize=s.integer("queue_maxsize", 10000, lo=1, hi=10_000_000),
    )
    if cfg.heartbeat_timeout_s <= cfg.heartbeat_interval_s:
        raise ConfigError("supervisor.heartbeat_timeout_s", cfg.heartbeat_timeout_s,
                          f"a number greater than supervisor.heartbeat_interval_s ({cfg.heartbeat_interval_s})")
    if cfg.backoff_max_s < cfg.backoff_initial_s:
        raise ConfigError("supervisor.backoff_max_s", cfg.backoff_max_s,
                          f"a number >= supervisor.backoff_initial_s ({cfg.backoff_initial_s})")
    s.reject_unknown()
    return cfg


def _subscriptions(s: Section, env: Mapping[str, str], secrets: Mapping[str, str]) -> SubscriptionsConfig:
    url = s.optional_string("url")
    if url is not None and urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError("consumer.subscriptions.url", url, "an http(s) URL of ws-gateway, or null")
    cfg = SubscriptionsConfig(url=url, requesting_service=s.string("requesting_service", "model-service"),
                              retry_s=s.number("retry_s", 60.0, lo=1, hi=86400),
                              api_key=_secret(s, env, secrets, "api_key"))
    if url is not None and not cfg.api_key:
        raise ConfigError("consumer.subscriptions.api_key_env", None,
                          "an environment variable (or api_key_key) holding ws-gateway's API key")
    s.reject_unknown()
    return cfg


def _consumer(s: Section, env: Mapping[str, str], secrets: Mapping[str, str]) -> ConsumerConfig:
    queues = {**DEFAULT_QUEUES, **s.string_map("queues", {})}
    unknown = sorted(set(queues) - set(CONSUMER_QUEUE_KINDS))
    if unknown:
        raise ConfigError(f"consumer.queues.{unknown[0]}", queues[unknown[0]],
                          "one of the kinds " + ", ".join(CONSUMER_QUEUE_KINDS))
    cfg = ConsumerConfig(
        queues=queues,
        ws_gateway_declare=s.choice("ws_gateway_declare", WS_GATEWAY_DECLARE, "passive"),
        prefetch=s.integer("prefetch", 500, lo=1, hi=65535),
        batch_max=s.integer("batch_max", 200, lo=1, hi=10000),
        batch_wait_ms=s.number("batch_wait_ms", 5.0, lo=0, hi=10000),
        subscriptions=_subscriptions(s.section("subscriptions"), env, secrets),
        max_body_bytes=s.integer("max_body_bytes", 1 << 20, lo=1024, hi=128 << 20),
        max_future_s=s.number("max_future_s", 300.0, lo=0, hi=86400),
        dead_letters=_dead_letters(s.section("dead_letters")),
    )
    s.reject_unknown()
    return cfg


def _dead_letters(s: Section) -> DeadLetterConfig:
    cfg = DeadLetterConfig(retention_days=s.number("retention_days", 7.0, lo=0.001, hi=3650),
                           max_stored_per_source=s.integer("max_stored_per_source", 10_000, lo=0, hi=10_000_000),
                           max_payload_bytes=s.integer("max_payload_bytes", 16_384, lo=256, hi=128 << 20))
    s.reject_unknown()
    return cfg


def _strategies(s: Section) -> tuple[StrategyParams, ...]:
    raw = s.raw("strategies", [])
    if not isinstance(raw, list):
        raise ConfigError("signaller.strategies", raw, "a list of strategy mappings")
    strategies = tuple(_built(f"signaller.strategies[{i}]",
                              lambda i=i, item=item: StrategyParams.from_mapping(item, f"signaller.strategies[{i}]"))
                       for i, item in enumerate(raw))
    seen: set[str] = set()
    for i, strategy in enumerate(strategies):
        if strategy.id in seen:
            raise ConfigError(f"signaller.strategies[{i}].id", strategy.id, "an id not used by another strategy")
        seen.add(strategy.id)
    return strategies


def _signaller(s: Section) -> SignallerConfig:
    cfg = SignallerConfig(
        signals_queue=s.string("signals_queue", "model-service.trading_signals"),
        max_data_age_s=s.number("max_data_age_s", 30.0, lo=0.1, hi=86400),
        global_rate=_built("signaller.global_rate", lambda: TokenBucket.from_mapping(
            s.raw("global_rate", {"rate_per_s": 1.0, "burst": 10}), "signaller.global_rate")),
        conflicts=_built("signaller.conflicts", lambda: ConflictRules.from_mapping(
            s.raw("conflicts", {}), "signaller.conflicts")),
        strategies=_strategies(s),
        republish_interval_s=s.number("republish_interval_s", 1.0, lo=0.05, hi=600),
        max_signal_age_s=s.number("max_signal_age_s", 60.0, lo=1, hi=86400),
    )
    s.reject_unknown()
    return cfg


def _exit_rules(raw: Any, path: str) -> ExitRules:
    return _built(path, lambda: ExitRules.from_mapping(raw, path))


def _exits(s: Section) -> ExitsConfig:
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
        asset_rate=_built("exits.asset_rate", lambda: TokenBucket(
            rate_per_s=rate.number("rate_per_s", 1.0, lo=0.0, lo_open=True), burst=rate.integer("burst", 3, lo=1),
            path="exits.asset_rate")),
        rules=rules,
        per_asset=per_asset,
        in_flight_timeout_s=s.number("in_flight_timeout_s", 60.0, lo=0.1, hi=86400),
        disabled_assets=disabled,
    )
    rate.reject_unknown()
    if cfg.debounce_max_delay_s < cfg.debounce_s:
        raise ConfigError("exits.debounce_max_delay_s", cfg.debounce_max_delay_s,
                          f"a number >= exits.debounce_s ({cfg.debounce_s})")
    s.reject_unknown()
    return cfg


def _per_asset(raw: Any, default: ExitRules) -> tuple[dict[str, ExitRules], frozenset[str]]:
    """`per_asset.<ASSET>`: exit rules replacing `rules` for that asset, plus `enabled` (default
    true; false leaves the asset's positions alone, e.g. ones msd did not open). A mapping with
    only `enabled: true` keeps the default rules."""
    if not isinstance(raw, Mapping):
        raise ConfigError("exits.per_asset", raw, "a mapping of asset to exit rules")
    rules, disabled = {}, set()
    for asset, section in raw.items():
        path = f"exits.per_asset.{asset}"
        if not isinstance(section, Mapping):
            raise ConfigError(path, section, "a mapping of exit rules (and enabled: true/false)")
        section = dict(section)
        enabled = section.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{path}.enabled", enabled, "true or false")
        if not enabled:
            disabled.add(str(asset))
        rules[str(asset)] = _exit_rules(section, path) if section else default
    return rules, frozenset(disabled)


# Applied when exits.rules is absent: protective stops plus a two-step take-profit ladder.
DEFAULT_EXIT_RULES = {
    "take_profit": {"steps": [{"at_pct": 3, "close": 0.5}, {"at_pct": 5, "close": 1.0}],
                    "breakeven_after_first_step": True},
    "stop_loss_pct": 2,
    "trailing": {"activation_pct": 1.5, "distance_pct": 0.8},
    "time_exit": {"max_hold_seconds": 86400, "min_profit_pct": 0},
    "cooldown_seconds": 60,
}


def _training(raw: Any, base: Path) -> TrainingParams:
    if not isinstance(raw, Mapping):
        raise ConfigError("trainer.training", raw, "a mapping of training parameters")
    values = dict(raw)
    models_dir = Path(str(values.get("models_dir", "../var/models")))
    values["models_dir"] = str(models_dir if models_dir.is_absolute() else (base / models_dir).resolve())
    return _built("trainer.training", lambda: TrainingParams.from_mapping(values))


def _schedule(raw: Any) -> Schedule | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"every_s", "daily_at"}:
        raise ConfigError("trainer.schedule", raw, "null, {every_s: N} or {daily_at: 'HH:MM'} (UTC)")
    return _built("trainer.schedule", lambda: Schedule(every_s=raw.get("every_s"), daily_at=raw.get("daily_at")))


def _quality(s: Section) -> QualityConfig:
    cfg = QualityConfig(threshold=s.number("threshold", 0.6, lo=0, hi=1),
                        hysteresis=s.number("hysteresis", 0.05, lo=0, hi=0.5),
                        min_samples=s.integer("min_samples", 30, lo=1),
                        window=s.integer("window", 200, lo=1, hi=100_000),
                        max_calibration_gap=s.number("max_calibration_gap", 0.1, lo=0, hi=1))
    s.reject_unknown()
    return cfg


DEFAULT_JOB = "msd.learning.job:train_strategies"
# Job paths of earlier versions, still accepted in existing configs.
JOB_ALIASES = {"msd.roles.trainer_jobs:train_strategies": DEFAULT_JOB,
               "msd.roles.trainer_jobs:summarise_executions": "msd.learning.job:summarise_executions"}


def _online(raw: Any) -> OnlineParams:
    if not isinstance(raw, Mapping):
        raise ConfigError("trainer.online", raw, "a mapping of online challenger parameters")
    return _built("trainer.online", lambda: OnlineParams.from_mapping(raw), prefix="trainer.online.")


def _trainer(s: Section, base: Path) -> TrainerConfig:
    job = s.string("job", DEFAULT_JOB)
    if job.count(":") != 1 or not all(job.split(":")):
        raise ConfigError("trainer.job", job, "a 'package.module:function' reference")
    job = JOB_ALIASES.get(job, job)
    threshold = s.raw("data_threshold", 500)
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1):
        raise ConfigError("trainer.data_threshold", threshold, "an integer >= 1, or null")
    cfg = TrainerConfig(job=job, timeout_s=s.number("timeout_s", 1800.0, lo=1, hi=86400),
                        training=_training(s.raw("training", {}), base),
                        schedule=_schedule(s.raw("schedule", {"daily_at": "02:00"})),
                        data_threshold=threshold, quality=_quality(s.section("quality")),
                        check_interval_s=s.number("check_interval_s", 10.0, lo=0.1, hi=3600),
                        online=_online(s.raw("online", {})))
    s.reject_unknown()
    return cfg
