"""`msd-sim`: the paper exchange (ws-gateway, order-manager and position-manager stand-ins).

    msd-sim --amqp-url amqp://guest@127.0.0.1:5672/msd_demo \\
            --dsn postgresql://postgres@127.0.0.1:5432/msd_demo --regime learnable --speed 10

Runs until SIGTERM or SIGINT, then stops after the current tick. A broker password missing
from the URL is taken from MSD_RABBITMQ_PASSWORD (the database uses libpq's PGPASSWORD).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from datetime import datetime
from urllib.parse import quote, urlsplit, urlunsplit

from msd.errors import DatabaseUnavailable
from msd.sim.market import CATALOG, REGIMES, MarketParams
from msd.sim.runner import SimConfig, run
from msd.values.parsing import from_iso

PASSWORD_ENV = "MSD_RABBITMQ_PASSWORD"


def with_password(url: str, password: str | None) -> str:
    """`url` with `password` filled in when the URL names a user but no password."""
    parts = urlsplit(url)
    if password is None or parts.password is not None or parts.username is None:
        return url
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    netloc = f"{parts.username}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _start_time(text: str) -> datetime:
    moment = from_iso(text, naive="keep")
    if moment is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time")
    return moment


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="msd-sim", description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", required=True, help="AMQP URL; the path is the vhost")
    parser.add_argument("--dsn", required=True, help="PostgreSQL DSN of the shared tables")
    parser.add_argument("--regime", choices=REGIMES, default="learnable")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--speed", type=float, default=1.0, help="sim seconds per wall second")
    parser.add_argument("--tick-rate", type=float, default=2.0, help="market ticks per wall second")
    parser.add_argument("--assets", nargs="+", default=["BTCUSDT", "ETHUSDT", "SOLUSDT"],
                        choices=sorted(CATALOG), metavar="SYMBOL")
    parser.add_argument("--start", type=_start_time, default=None,
                        help="sim start, aware ISO-8601 (default: now)")
    parser.add_argument("--position-update-s", type=float, default=5.0,
                        help="sim seconds between websocket position updates")
    parser.add_argument("--position-path", choices=("order_execution", "websocket"), default="order_execution",
                        help="position-manager path that applies fills (CONTRACTS §3.5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # pika logs every connection step at INFO; the sim's own lines are the ones worth reading.
    logging.getLogger("pika").setLevel(logging.WARNING)
    try:
        config = SimConfig(
            amqp_url=with_password(args.amqp_url, os.environ.get(PASSWORD_ENV)), dsn=args.dsn,
            assets=tuple(args.assets), seed=args.seed, speed=args.speed, tick_rate=args.tick_rate,
            position_update_s=args.position_update_s, position_path=args.position_path, start=args.start,
            market=MarketParams(regime=args.regime))
    except ValueError as exc:
        print(f"msd-sim: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        run(config, stop)
    except DatabaseUnavailable as exc:
        print(f"msd-sim: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("msd.sim").info("msd-sim stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
