"""msd-ctl's global options are accepted before or after the subcommand (README: `status --json`)."""
import pytest

from msd.ctl import _parser, main


@pytest.mark.parametrize("argv", [
    ["-s", "S", "--json", "--timeout", "3", "status"],
    ["status", "-s", "S", "--json", "--timeout", "3"],
    ["-s", "S", "status", "--json", "--timeout", "3"],
    ["--json", "status", "--timeout", "3", "-s", "S"],
])
def test_global_options_before_or_after_the_subcommand(argv):
    args = _parser().parse_args(argv)
    assert (args.command, args.socket, args.json, args.timeout, args.config) == ("status", "S", True, 3.0, None)


def test_defaults_and_model_commands_keep_their_own_options():
    args = _parser().parse_args(["status"])
    assert (args.socket, args.config, args.json, args.timeout) == (None, None, False, 15.0)
    args = _parser().parse_args(["versions", "--strategy", "a", "--json", "-c", "etc/x.yaml"])
    assert (args.command, args.strategy, args.json, args.config) == ("versions", "a", True, "etc/x.yaml")


def test_a_value_before_the_subcommand_is_not_undone_after_it():
    assert _parser().parse_args(["--json", "-s", "S", "status"]).json is True


@pytest.mark.parametrize("argv", [["-s", "S", "status", "-c", "x.yaml"], ["status", "--bogus"], ["frobnicate"]])
def test_bad_arguments_exit_2(argv, capsys):
    assert main(argv) == 2
