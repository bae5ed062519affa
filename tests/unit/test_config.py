"""Config parsing, validation messages, secrets and the reload diff."""
from pathlib import Path

import pytest
import yaml

from msd.config import changed_sections, load_config
from msd.roles.runtime.reload import changed_roles
from msd.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "etc" / "model-service.yaml"


def write(tmp_path, data, name="model-service.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_config_is_valid():
    cfg = load_config(SHIPPED, env={})
    assert cfg.signaller.signals_queue == "model-service.trading_signals"
    assert cfg.control.socket == (SHIPPED.parent / "../var/run/msd.sock").resolve()


def test_empty_file_gives_documented_defaults(tmp_path):
    cfg = load_config(write(tmp_path, {}), env={})
    assert cfg.metrics.port == 9464
    assert cfg.supervisor.stop_deadline_s == 10.0
    assert cfg.consumer.queues["order_events"] == "order-manager.order_events"
    assert cfg.consumer.ws_gateway_declare == "passive"
    assert cfg.trainer.job == "msd.learning.job:train_strategies"
    assert cfg.trainer.online.enabled and cfg.trainer.training.embargo == 1200


def test_the_older_trainer_job_path_is_an_alias(tmp_path):
    cfg = load_config(write(tmp_path, {"trainer": {"job": "msd.roles.trainer_jobs:train_strategies"}}), env={})
    assert cfg.trainer.job == "msd.learning.job:train_strategies"
    # issue #10's hardening keys
    assert (cfg.consumer.max_body_bytes, cfg.consumer.max_future_s) == (1 << 20, 300.0)
    assert (cfg.consumer.dead_letters.retention_days, cfg.consumer.dead_letters.max_stored_per_source,
            cfg.consumer.dead_letters.max_payload_bytes) == (7.0, 10_000, 16_384)
    assert cfg.signaller.max_signal_age_s == 60.0
    assert cfg.logging.format == "auto"


@pytest.mark.parametrize("data, key, fragment", [
    ({"metrics": {"port": 70000}}, "metrics.port", "[0, 65535]"),
    ({"metrics": {"port": "9464"}}, "metrics.port", "an integer"),
    ({"logging": {"level": "LOUD"}}, "logging.level", "one of DEBUG"),
    ({"logging": {"format": "xml"}}, "logging.format", "one of auto, json, text"),
    ({"consumer": {"max_body_bytes": 10}}, "consumer.max_body_bytes", "in [1024,"),
    ({"consumer": {"dead_letters": {"max_stored_per_source": -1}}}, "consumer.dead_letters.max_stored_per_source",
     "in [0, 10000000]"),
    ({"signaller": {"max_signal_age_s": 0}}, "signaller.max_signal_age_s", "in [1, 86400]"),
    ({"supervisor": {"stop_deadline_s": -1}}, "supervisor.stop_deadline_s", "in [0.5, 600]"),
    ({"supervisor": {"heartbeat_interval_s": 5, "heartbeat_timeout_s": 2}},
     "supervisor.heartbeat_timeout_s", "greater than supervisor.heartbeat_interval_s"),
    ({"consumer": {"queues": {"orders": "x"}}}, "consumer.queues.orders", "one of the kinds"),
    ({"consumer": {"prefetch": True}}, "consumer.prefetch", "an integer"),
    ({"database": {"dsn": "mysql://x/y"}}, "database.dsn", "postgresql"),
    ({"trainer": {"job": "no_colon"}}, "trainer.job", "module:function"),
    ({"signaller": {"signal_queue": "typo"}}, "signaller.signal_queue", "no such key"),
    ({"unknown_section": {}}, "unknown_section", "no such key"),
    ({"metrics": [1, 2]}, "metrics", "a mapping"),
    ({"trainer": {"online": {"window": 5}}}, "trainer.online.window", "an int >= 20"),
    ({"trainer": {"online": {"learning_rate": 0}}}, "trainer.online.learning_rate", "(0, 10]"),
    ({"trainer": {"quality": {"max_calibration_gap": 2}}}, "trainer.quality.max_calibration_gap", "[0, 1]"),
    ({"trainer": {"training": {"min_emitted_calls": 1}}}, "min_emitted_calls", "an int >= 2"),
    ({"trainer": {"training": {"horizon_s": 900, "max_bar_lag_s": 300, "embargo_s": 900}}}, "embargo_s",
     "[1200, "),
])
def test_invalid_values_name_key_value_and_allowed(tmp_path, data, key, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data), env={})
    assert err.value.key == key
    assert fragment in str(err.value)


def test_yaml_syntax_error_names_the_position(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("metrics:\n  port: [1\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(path, env={})


def test_password_from_env_never_appears_in_repr(tmp_path):
    path = write(tmp_path, {"database": {"dsn": "postgresql://msd@db:5432/msd", "password_env": "PW"}})
    cfg = load_config(path, env={"PW": "s3cr/t"})
    assert cfg.database.url == "postgresql://msd:s3cr%2Ft@db:5432/msd"
    assert "s3cr" not in repr(cfg)


def test_password_from_credentials_file(tmp_path):
    (tmp_path / "creds.yaml").write_text("rabbit: hunter2\n")
    path = write(tmp_path, {"credentials_file": "creds.yaml",
                            "rabbitmq": {"url": "amqp://msd@mq:5672/v", "password_key": "rabbit"}})
    cfg = load_config(path, env={})
    assert cfg.rabbitmq.url == "amqp://msd:hunter2@mq:5672/v?heartbeat=30"
    assert "hunter2" not in repr(cfg)


def test_missing_credentials_key_is_named(tmp_path):
    (tmp_path / "creds.yaml").write_text("other: x\n")
    path = write(tmp_path, {"credentials_file": "creds.yaml", "database": {"password_key": "db"}})
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.key == "database.password_key"


def test_password_inside_url_is_refused_without_echoing_it(tmp_path):
    path = write(tmp_path, {"database": {"dsn": "postgresql://u:leaked@h/db"}})
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "leaked" not in str(err.value)


@pytest.mark.parametrize("change, sections, roles", [
    ({"consumer": {"prefetch": 10}}, {"consumer"}, {"consumer"}),
    ({"signaller": {"max_data_age_s": 3}}, {"signaller"}, {"signaller", "exits"}),
    ({"exits": {"poll_interval_s": 1}}, {"exits"}, {"exits"}),
    ({"logging": {"level": "DEBUG"}}, {"logging"}, set()),
    ({"database": {"connect_timeout_s": 9}}, {"database"}, {"consumer", "signaller", "exits", "trainer"}),
    ({"trainer": {"timeout_s": 60}}, {"trainer"}, {"trainer", "signaller"}),   # signaller runs the triggers
    ({}, set(), set()),
])
def test_reload_diff_restarts_only_roles_whose_sections_changed(tmp_path, change, sections, roles):
    old = load_config(write(tmp_path, {}, "a.yaml"), env={})
    new = load_config(write(tmp_path, change, "b.yaml"), env={})
    assert changed_sections(old, new) == sections
    assert changed_roles(old, new) == roles


def test_demo_config_differs_from_the_documented_one_only_in_where_it_runs():
    """etc/demo.yaml is a copy for `make run`; it must not drift from model-service.yaml."""
    shipped = yaml.safe_load(SHIPPED.read_text())
    demo = yaml.safe_load((SHIPPED.parent / "demo.yaml").read_text())
    for section, key in (("database", "dsn"), ("rabbitmq", "url"), ("control", "socket")):
        assert demo[section].pop(key) != shipped[section].pop(key)
    assert demo == shipped
    assert load_config(SHIPPED.parent / "demo.yaml", env={}).database.dsn.endswith("/msd_demo")


def test_rabbitmq_heartbeat_reaches_the_connection_url(tmp_path):
    """Regression: rabbitmq.heartbeat_s was parsed but never used (pika got a fixed 30 s)."""
    import pika
    cfg = load_config(write(tmp_path, {"rabbitmq": {"url": "amqp://msd@mq:5672/v?connection_attempts=2", "heartbeat_s": 7,
                                                    "password_env": "PW"}}), env={"PW": "pw"})
    params = pika.URLParameters(cfg.rabbitmq.url)
    assert (params.heartbeat, params.credentials.password, params.virtual_host) == (7, "pw", "v")


def test_exits_in_flight_timeout_and_per_asset_enabled(tmp_path):
    cfg = load_config(write(tmp_path, {}), env={})
    assert cfg.exits.in_flight_timeout_s == 60 and cfg.exits.disabled_assets == frozenset()
    assert cfg.exits.rules.time_exit.min_profit_pct == 0 and cfg.exits.enabled_for("BTCUSDT")
    cfg = load_config(write(tmp_path, {"exits": {"in_flight_timeout_s": 5, "per_asset": {
        "ETHUSDT": {"enabled": False}, "SOLUSDT": {"enabled": True}, "BTCUSDT": {"stop_loss_pct": 3}}}}), env={})
    assert cfg.exits.in_flight_timeout_s == 5 and cfg.exits.disabled_assets == frozenset({"ETHUSDT"})
    assert not cfg.exits.enabled_for("ETHUSDT") and cfg.exits.enabled_for("SOLUSDT")
    assert cfg.exits.rules_for("SOLUSDT") == cfg.exits.rules and cfg.exits.rules_for("BTCUSDT").stop_loss_pct == 3


def test_lowercase_per_asset_key_is_upper_cased_instead_of_silently_never_matching(tmp_path):
    """Regression (exit review 9): `per_asset: {btcusdt: ...}` loaded fine and never matched a
    position (assets are uppercase, CONTRACTS §3.2): the BTCUSDT stop loss silently stayed 2 %."""
    cfg = load_config(write(tmp_path, {"exits": {"per_asset": {"btcusdt": {"stop_loss_pct": 3},
                                                               "ethUsdt": {"enabled": False}}}}), env={})
    assert cfg.exits.rules_for("BTCUSDT").stop_loss_pct == 3 and not cfg.exits.enabled_for("ETHUSDT")
    assert set(cfg.exits.per_asset) == {"BTCUSDT", "ETHUSDT"}


@pytest.mark.parametrize("per_asset, key, value", [
    ({"BTC-USDT": {"stop_loss_pct": 3}}, "exits.per_asset.BTC-USDT", "BTC-USDT"),
    ({"BTC": {"stop_loss_pct": 3}}, "exits.per_asset.BTC", "BTC"),
    ({"BTCUSDT": {"stop_loss_pct": 3}, "btcusdt": {"enabled": False}}, "exits.per_asset.btcusdt", "btcusdt"),
    ({7: {"enabled": False}}, "exits.per_asset.7", 7),
])
def test_invalid_per_asset_keys_are_refused_naming_the_key(tmp_path, per_asset, key, value):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {"exits": {"per_asset": per_asset}}), env={})
    assert (err.value.key, err.value.value) == (key, value) and err.value.allowed


@pytest.mark.parametrize("exits, key", [
    ({"in_flight_timeout_s": 0}, "exits.in_flight_timeout_s"),
    ({"per_asset": {"ETHUSDT": {"enabled": "no"}}}, "exits.per_asset.ETHUSDT.enabled"),
    ({"per_asset": {"ETHUSDT": {"stop_los_pct": 3}}}, "exits.per_asset.ETHUSDT.stop_los_pct"),
    ({"per_asset": {"ETHUSDT": "off"}}, "exits.per_asset.ETHUSDT"),
    ({"rules": {"cooldown_seconds": 0}}, "exits.rules.cooldown_seconds"),
])
def test_invalid_exits_settings_name_the_key(tmp_path, exits, key):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {"exits": exits}), env={})
    assert err.value.key == key


def test_consumer_is_told_not_restarted_when_the_strategies_change(tmp_path):
    """Regression (issue #11): the consumer subscribes the strategies' assets at ws-gateway but the
    hand-kept section map neither restarted nor told it when signaller.strategies changed."""
    from msd.roles.runtime.reload import applies_live, reload_plan
    strategy = {"id": "s1", "assets": ["BTCUSDT"], "rate": {"rate_per_s": 1, "burst": 1},
                "warmup": {"min_amount_usdt": 10, "max_amount_usdt": 20, "max_exposure_usdt": 100}}
    old = load_config(write(tmp_path, {"signaller": {"strategies": [strategy]}}, "a.yaml"), env={})
    new = load_config(write(tmp_path, {"signaller": {"strategies": [{**strategy, "assets": ["BTCUSDT", "ETHUSDT"]}]}},
                            "b.yaml"), env={})
    assert changed_roles(old, new) == {"consumer", "signaller", "exits", "trainer"}
    assert applies_live("consumer", old, new)
    assert reload_plan(old, new) == {"changed_sections": ["signaller"],
                                     "affected": ["consumer", "exits", "signaller", "trainer"],
                                     "live": ["consumer", "exits", "signaller"]}


@pytest.mark.parametrize("data, key, value, allowed", [
    ({"signaller": {"strategies": [{"id": "s1", "assets": ["BTCUSDT"], "rate": {"rate_per_s": 0, "burst": 1},
                                    "warmup": {"min_amount_usdt": 10, "max_amount_usdt": 20,
                                               "max_exposure_usdt": 100}}]}},
     "signaller.strategies[0].rate.rate_per_s", 0, "a finite number > 0 (tokens per second)"),
    ({"signaller": {"global_rate": {"rate_per_s": 1, "burst": 0}}}, "signaller.global_rate.burst", 0, "an integer >= 1"),
    ({"exits": {"rules": {"stop_loss_pct": "x"}}}, "exits.rules.stop_loss_pct", "x", "a finite number"),
    ({"trainer": {"online": {"window": 5}}}, "trainer.online.window", 5, "an int >= 20"),
    ({"trainer": {"schedule": {"every_s": 5}}}, "trainer.schedule.every_s", 5, "a number >= 60"),
])
def test_domain_errors_carry_key_value_and_allowed_as_attributes(tmp_path, data, key, value, allowed):
    """Config errors as data (issue #11): what a domain validator refused reaches the ConfigError
    as attributes, never by reading its message back."""
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data), env={})
    assert (err.value.key, err.value.value, err.value.allowed) == (key, value, allowed)
