"""exits.max_signal_age_s: how long an unsent exit may wait in the outbox before it is decided again."""
import pytest

from msd.config import load_config
from msd.errors import ConfigError
from tests.unit.test_config import SHIPPED, write


def test_exit_age_limit_defaults_to_a_minute_and_is_its_own_setting(tmp_path):
    assert load_config(write(tmp_path, {}), env={}).exits.max_signal_age_s == 60
    assert load_config(SHIPPED, env={}).exits.max_signal_age_s == 60
    cfg = load_config(write(tmp_path, {"exits": {"max_signal_age_s": 5}, "signaller": {"max_signal_age_s": 90}}),
                      env={})
    assert (cfg.exits.max_signal_age_s, cfg.signaller.max_signal_age_s) == (5, 90)


@pytest.mark.parametrize("value", [0, 0.5, 86401, "soon", True])
def test_exit_age_limit_out_of_range_names_the_key_and_the_range(tmp_path, value):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {"exits": {"max_signal_age_s": value}}), env={})
    assert err.value.key == "exits.max_signal_age_s" and "[1, 86400]" in str(err.value)
