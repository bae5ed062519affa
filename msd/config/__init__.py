"""The service configuration: one YAML file, validated once, into frozen dataclasses.

This module is the shape-only part the supervisor process loads (DESIGN §3): it reads the file,
resolves secrets, and validates the sections the supervisor itself acts on (control, metrics,
logging, supervisor, the database and broker URLs, and `trainer.timeout_s`, whose deadline it
polices). Every other section is validated by its domain, next to the code that reads it: the
role packages' `config` modules (`DOMAIN_SECTIONS`), reached by name on first use, so the
supervisor never imports them. `load_config(path)` validates everything (what `msd check-config`
does); `read_config(path)` only the shape (the supervisor's own view: a reload is checked in full
by a short-lived `msd check-config` child first, msd.supervisor.reload_check).

Errors are ConfigError(key, value, allowed); secrets never appear in a repr or a log line.
"""
from __future__ import annotations

import importlib
import os
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import yaml

from msd.config.reader import Section
from msd.errors import ConfigError

ROLES = ("consumer", "signaller", "exits")
TRAINER = "trainer"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("auto", "json", "text")
# Sections validated by their domain: section -> "module:function(section, context)".
DOMAIN_SECTIONS: Mapping[str, str] = {
    "consumer": "msd.roles.consumer.config:consumer_section",
    "signaller": "msd.roles.signaller.config:signaller_section",
    "exits": "msd.roles.exits.config:exits_section",
    "trainer": "msd.roles.trainer.config:trainer_section",
}


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
class LeadershipConfig:
    """Active/standby through a lease in PostgreSQL (msd.roles.lease). Off: this instance leads alone."""
    enabled: bool = False
    instance: str = field(default_factory=socket.gethostname)   # names this instance in the lease
    lease_renew_s: float = 2.0      # how often the holder renews (and a standby tries to take over)
    failover_s: float = 10.0        # how long a lease lasts unrenewed: the longest a dead leader blocks

    @property
    def lost_after_s(self) -> float:
        """A leader that could not renew for this long stops its roles: two renewals before expiry."""
        return self.failover_s - 2 * self.lease_renew_s


@dataclass(frozen=True)
class SectionContext:
    """What a domain section's validator may need besides its own keys."""
    base: Path                                  # the config file's directory (relative paths)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)   # the credentials file
    env: Mapping[str, str] | None = field(default=None, repr=False)        # None: os.environ
    trainer_timeout_s: float = 1800.0

    def secret(self, section: Section, key: str) -> str | None:
        """A secret named in the config: `<key>_env` names an env var, `<key>_key` a credentials-file key."""
        env = os.environ if self.env is None else self.env
        var = section.optional_string(f"{key}_env")
        cred = section.optional_string(f"{key}_key")
        if var and env.get(var):
            return env[var]
        if cred:
            if cred not in self.secrets:
                raise ConfigError(section.key_path(f"{key}_key"), cred, "a key present in credentials_file")
            return self.secrets[cred]
        return None


@dataclass(frozen=True)
class Config:
    """The whole file. The domain sections (`consumer`, `signaller`, `exits`, `trainer`) are
    validated by their domain on first access; `load_config` has touched them all."""
    source: Path
    control: ControlConfig
    metrics: MetricsConfig
    logging: LoggingConfig
    database: DatabaseConfig
    rabbitmq: RabbitConfig
    supervisor: SupervisorConfig
    trainer_timeout_s: float                    # the trainer's deadline, policed by the supervisor
    leadership: LeadershipConfig = field(default_factory=LeadershipConfig)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)   # the domain sections as read
    context: SectionContext = field(default_factory=lambda: SectionContext(Path(".")), repr=False,
                                    compare=False)
    _parsed: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def consumer(self) -> Any:
        return self.domain("consumer")

    @property
    def signaller(self) -> Any:
        return self.domain("signaller")

    @property
    def exits(self) -> Any:
        return self.domain("exits")

    @property
    def trainer(self) -> Any:
        return self.domain("trainer")

    def domain(self, name: str) -> Any:
        """Section `name` validated by its domain's code (once); raises ConfigError."""
        if name not in self._parsed:
            module, _, function = DOMAIN_SECTIONS[name].partition(":")
            validate: Callable[[Section, SectionContext], Any] = getattr(importlib.import_module(module), function)
            section = Section(self.raw.get(name), name)
            parsed = validate(section, self.context)
            section.reject_unknown()
            self._parsed[name] = parsed
        return self._parsed[name]

    def section_names(self) -> tuple[str, ...]:
        shape = tuple(f.name for f in fields(self) if f.name not in ("source", "trainer_timeout_s", "raw",
                                                                      "context", "_parsed"))
        return shape + tuple(DOMAIN_SECTIONS)


def read_config(path: str | os.PathLike, env: Mapping[str, str] | None = None, *,
                text: str | None = None) -> Config:
    """The shape of the file at `path` (or of `text`, read from there): the sections the
    supervisor acts on are validated, the domain sections kept as read. Raises ConfigError."""
    path = Path(path).resolve()
    root = Section(_read_yaml(path, text), "")
    secrets = _load_credentials(root.optional_string("credentials_file"), path.parent)
    trainer = Section(root.raw("trainer", {}), "trainer")
    context = SectionContext(path.parent, secrets, env, trainer.number("timeout_s", 1800.0, lo=1, hi=86400))
    cfg = Config(
        source=path,
        control=_control(root.section("control"), path.parent),
        metrics=_metrics(root.section("metrics")),
        logging=_logging(root.section("logging")),
        database=_database(root.section("database"), context),
        rabbitmq=_rabbitmq(root.section("rabbitmq"), context),
        supervisor=_supervisor(root.section("supervisor")),
        trainer_timeout_s=context.trainer_timeout_s,
        leadership=_leadership(root.section("leadership")),
        raw={name: root.raw(name, {}) for name in DOMAIN_SECTIONS},
        context=context,
    )
    root.reject_unknown()
    if cfg.leadership.enabled and cfg.leadership.lost_after_s <= 2 * cfg.supervisor.heartbeat_interval_s:
        raise ConfigError("leadership.failover_s", cfg.leadership.failover_s,
                          f"a lease long enough that failover_s - 2 x lease_renew_s exceeds 2 x "
                          f"supervisor.heartbeat_interval_s ({2 * cfg.supervisor.heartbeat_interval_s:g}): the "
                          "supervisor takes a silent lease child for a lost lease")
    return cfg


def load_config(path: str | os.PathLike, env: Mapping[str, str] | None = None, *,
                text: str | None = None) -> Config:
    """Read and validate the whole file at `path` (every section, by its domain). Raises ConfigError."""
    cfg = read_config(path, env, text=text)
    for name in DOMAIN_SECTIONS:
        cfg.domain(name)
    return cfg


def changed_sections(old: Config, new: Config) -> set[str]:
    """The sections whose validated values differ (domain sections are validated to compare)."""
    return {name for name in old.section_names() if getattr(old, name) != getattr(new, name)}


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("<file>", str(path), f"a readable file ({exc.strerror})") from None


def _read_yaml(path: Path, text: str | None = None) -> Any:
    text = read_text(path) if text is None else text
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


def _database(s: Section, context: SectionContext) -> DatabaseConfig:
    cfg = DatabaseConfig(
        dsn=_checked_url(s, "dsn", ("postgresql", "postgres"), "postgresql://postgres@127.0.0.1:5432/msd"),
        connect_timeout_s=s.integer("connect_timeout_s", 5, lo=1, hi=120),
        password=context.secret(s, "password"),
    )
    s.reject_unknown()
    return cfg


def _rabbitmq(s: Section, context: SectionContext) -> RabbitConfig:
    cfg = RabbitConfig(
        url_without_secret=_checked_url(s, "url", ("amqp", "amqps"), "amqp://guest@127.0.0.1:5672/%2F"),
        heartbeat_s=s.integer("heartbeat_s", 30, lo=0, hi=3600),
        password=context.secret(s, "password"),
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


def _leadership(s: Section) -> LeadershipConfig:
    cfg = LeadershipConfig(
        enabled=s.boolean("enabled", False),
        instance=s.string("instance", socket.gethostname()),
        lease_renew_s=s.number("lease_renew_s", 2.0, lo=0.05, hi=60),
        failover_s=s.number("failover_s", 10.0, lo=0.2, hi=600),
    )
    if cfg.failover_s < 3 * cfg.lease_renew_s:
        raise ConfigError("leadership.failover_s", cfg.failover_s,
                          f"a number >= 3 x leadership.lease_renew_s ({3 * cfg.lease_renew_s:g}): a leader "
                          "stops its roles after missing renewals for failover_s - 2 x lease_renew_s")
    if "/" in cfg.instance:
        raise ConfigError("leadership.instance", cfg.instance, "a name without '/'")
    s.reject_unknown()
    return cfg
