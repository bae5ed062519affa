"""How often a broker-side close repeats a signal, and whether each repeat is one msd named.

The outbox (real PostgreSQL, real broker, own database and vhost) publishes signals one after
another for `--seconds` while another thread closes every connection of the vhost from the
server side every `--close-every` seconds (`rabbitmqctl close_all_connections`). Then the queue
is drained and compared with the outbox. Prints: signals recorded, missing from the queue (must
be 0), closes, publishes whose confirm was lost (logged `unconfirmed`), second copies on the
queue, and second copies msd did not name (must be 0: at-least-once, a repeat only after a lost
confirm). Usage: python benchmarks/lost_confirms.py [--seconds 20] [--close-every 0.3]
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pika

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msd.bus.publisher import ConfirmingPublisher  # noqa: E402
from msd.roles.runtime.outbox import Outbox, Submission  # noqa: E402
from msd.store.db import Database  # noqa: E402
from msd.store.migrate import apply_migrations  # noqa: E402
from msd.values.messages import MarketDataSnapshot, TradingSignal  # noqa: E402
from tests.fixtures.pg import create_database, drop_database  # noqa: E402
from tests.fixtures.rabbit import amqp_url, close_vhost_connections, create_vhost, delete_vhost  # noqa: E402

QUEUE = "model-service.trading_signals"


class Unconfirmed(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.ids: Counter = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "unconfirmed", False):
            self.ids[record.signal_id] += 1


def new_signal() -> TradingSignal:
    return TradingSignal(signal_id=str(uuid.uuid4()), signal_type="buy", asset="BTCUSDT", amount=Decimal("15"),
                         confidence=0.6, timestamp=datetime.now(timezone.utc), strategy_id="bench",
                         model_version=None, is_warmup=True,
                         market_data_snapshot=MarketDataSnapshot(Decimal("95000"), None, None, None),
                         metadata={}, trace_id=str(uuid.uuid4()))


def queued(url: str) -> Counter:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel, ids = conn.channel(), Counter()
    while (message := channel.basic_get(QUEUE, auto_ack=True))[0] is not None:
        ids[message[1].message_id] += 1
    conn.close()
    return ids


def run(seconds: float, close_every: float, dsn: str, vhost: str) -> None:
    apply_migrations(dsn)
    handler = Unconfirmed()
    logging.getLogger("msd.outbox").addHandler(handler)
    db, publisher = Database(dsn), ConfirmingPublisher(amqp_url(vhost), connection_name="bench-lost-confirms")
    outbox = Outbox(db, publisher, QUEUE, modes=("warmup",))
    stop, closes = threading.Event(), []

    def closer():
        while not stop.wait(close_every):
            closes.append(close_vhost_connections(vhost))
    thread = threading.Thread(target=closer)
    thread.start()
    recorded, end = [], time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            item = new_signal()
            if outbox.submit_all([Submission(item, "warmup")])[0].recorded:
                recorded.append(item.signal_id)
            outbox.service_connection()     # the verdicts of earlier publishes (pipelined)
            outbox.commit_marks()
    finally:
        stop.set()
        thread.join()
    while outbox.backlog or outbox.in_flight:
        outbox.flush()
        outbox.settle(1.0)
    on_queue = queued(amqp_url(vhost))
    copies = {sid: n - 1 for sid, n in on_queue.items() if n > 1}
    unnamed = {sid: n for sid, n in copies.items() if n > handler.ids[sid]}
    print(f"signals recorded {len(recorded)}, missing from the queue {len(set(recorded) - set(on_queue))}, "
          f"not recorded but queued {len(set(on_queue) - set(recorded))}")
    print(f"server-side closes {len(closes)}, lost confirms logged {sum(handler.ids.values())}, "
          f"second copies {sum(copies.values())}, second copies not logged {sum(unnamed.values())}")
    outbox.close()
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--close-every", type=float, default=0.3)
    args = parser.parse_args()
    dsn, vhost = create_database(), create_vhost("msd_bench")
    try:
        run(args.seconds, args.close_every, dsn, vhost)
    finally:
        drop_database(dsn)
        delete_vhost(vhost)


if __name__ == "__main__":
    main()
