"""`msd`: run the daemon, check a config file, apply database migrations, or backtest."""
from __future__ import annotations

import argparse
import sys

from msd.errors import ConfigError, DatabaseUnavailable, MsdError

EXIT_BAD_CONFIG = 2
EXIT_UNAVAILABLE = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msd", description="msd, the model service daemon")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the supervisor in the foreground")
    run.add_argument("-c", "--config", default="etc/model-service.yaml")
    run.add_argument("--no-migrate", action="store_true", help="do not apply migrations at start-up")
    check = sub.add_parser("check-config", help="validate a config file and exit (2 when invalid)")
    check.add_argument("file")
    # Used by the supervisor to validate a reload (msd.supervisor.reload_check): the running config
    # and the file's text come pickled on stdin, the answer goes out as JSON.
    check.add_argument("--reload-plan", action="store_true", help=argparse.SUPPRESS)
    migrate = sub.add_parser("migrate", help="apply SQL migrations to the configured database")
    migrate.add_argument("-c", "--config", default="etc/model-service.yaml")
    # The backtest's own options are parsed by msd.backtest.command, imported only when it runs:
    # the supervisor process loads this module and must not load the domain (DESIGN §3).
    backtest = sub.add_parser("backtest", add_help=False, help="replay msd's decisions over recorded candles "
                                                                "(`msd backtest --help`)")
    backtest.add_argument("rest", nargs="*")
    return parser


def _load(path: str):
    from msd.config import load_config
    return load_config(path)


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.reload_plan:
        return _reload_plan(args.file)
    cfg = _load(args.file)
    print(f"{cfg.source}: OK")
    return 0


def _reload_plan(path: str) -> int:
    """Validate the text the supervisor read against the config it runs; answer in JSON."""
    import json
    import pickle
    from msd.config import load_config
    from msd.roles.runtime.reload import reload_plan
    request = pickle.load(sys.stdin.buffer)
    running = request["running"]
    try:
        new = load_config(path, running.context.env, text=request["text"])
        answer = {"ok": True, **reload_plan(running, new)}
    except ConfigError as exc:
        answer = {"ok": False, "error": {"key": exc.key, "value": exc.value, "allowed": exc.allowed,
                                         "message": str(exc)}}
    print(json.dumps(answer, default=repr))
    return 0 if answer["ok"] else EXIT_BAD_CONFIG


def cmd_migrate(args: argparse.Namespace) -> int:
    from msd.store.migrate import apply_migrations
    cfg = _load(args.config)
    applied = apply_migrations(cfg.database.url)
    print("applied: " + (", ".join(applied) if applied else "nothing (schema is current)"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The supervisor process: it loads the config's shape only; the file is validated in full
    (and migrations applied) by a child running `msd migrate`/`msd check-config` (DESIGN §3)."""
    from msd import logs
    from msd.config import read_config
    from msd.metrics_dir import prepare_multiprocess_dir, remove_multiprocess_dir
    from msd.supervisor.reload_check import check_at_start
    # Before anything imports prometheus_client (msd.metrics_dir says why).
    prom_dir = prepare_multiprocess_dir()
    try:
        cfg = read_config(args.config)
        logs.setup(cfg.logging.level, fmt=cfg.logging.format)
        # With leadership on, only the leader migrates (its lease child, on taking the lease).
        code = check_at_start(cfg.source, migrate=not args.no_migrate and not cfg.leadership.enabled)
        if code != 0:
            remove_multiprocess_dir(prom_dir)
            return code
        from msd.supervisor.daemon import serve
    except BaseException:
        remove_multiprocess_dir(prom_dir)
        raise
    return serve(cfg, prom_dir)     # removes the directory when it ends


def cmd_backtest(args: argparse.Namespace) -> int:
    from msd.backtest import command
    parser = argparse.ArgumentParser(prog="msd backtest", description="msd's decision loop over recorded candles")
    command.add_arguments(parser)
    return command.main(parser.parse_args(args.rest), read_bars_from=_bars_reader)


def _bars_reader(cfg):
    """`msd backtest --from-db`: the configured database's recorded bars, read only."""
    from msd.store.db import Database
    from msd.store.market import read_bars

    def read(asset: str) -> list[tuple]:
        db = Database(cfg.database.url)
        try:
            with db.transaction() as conn:
                return read_bars(conn, asset)
        finally:
            db.close()
    return read


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["backtest"]:        # its options are its own (cmd_backtest)
        args = argparse.Namespace(command="backtest", rest=argv[1:])
    else:
        args = _parser().parse_args(argv)
    handler = {"run": cmd_run, "check-config": cmd_check_config, "migrate": cmd_migrate,
               "backtest": cmd_backtest}[args.command]
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"msd: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except DatabaseUnavailable as exc:
        print(f"msd: database unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except MsdError as exc:
        print(f"msd: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
