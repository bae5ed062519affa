"""`msd`: run the daemon, check a config file, or apply database migrations."""
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
    migrate = sub.add_parser("migrate", help="apply SQL migrations to the configured database")
    migrate.add_argument("-c", "--config", default="etc/model-service.yaml")
    return parser


def _load(path: str):
    from msd.config import load_config
    return load_config(path)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.file)
    print(f"{cfg.source}: OK")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from msd.store.migrate import apply_migrations
    cfg = _load(args.config)
    applied = apply_migrations(cfg.database.url)
    print("applied: " + (", ".join(applied) if applied else "nothing (schema is current)"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from msd import logs
    from msd.metrics_dir import prepare_multiprocess_dir, remove_multiprocess_dir
    # Before anything imports prometheus_client (msd.metrics_dir says why).
    prom_dir = prepare_multiprocess_dir()
    try:
        cfg = _load(args.config)
        logs.setup(cfg.logging.level, fmt=cfg.logging.format)
        if not args.no_migrate:
            from msd.store.migrate import apply_migrations
            apply_migrations(cfg.database.url)
        from msd.supervisor.daemon import serve
    except BaseException:
        remove_multiprocess_dir(prom_dir)
        raise
    return serve(cfg, prom_dir)     # removes the directory when it ends


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"run": cmd_run, "check-config": cmd_check_config, "migrate": cmd_migrate}[args.command]
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
