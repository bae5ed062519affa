"""Playing position-manager and order-manager's side of the exit flow in daemon tests.

Position updates are built from the CONTRACTS §3.4 examples (decimal strings, signed size, no
prices); the matching `positions` rows are written the way position-manager keeps them (naive
UTC timestamps, DECIMAL(20,8)); exit signals are read off the real signals queue.
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pika
import psycopg2

from tests import examples
from tests.contract.order_manager_rules import problems

POSITIONS_QUEUE = "position-manager.position_updated"
SIGNALS_QUEUE = "model-service.trading_signals"


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def position_update(position_id: str, asset: str, size: str, trace_id: str | None = None, **fields) -> bytes:
    body = json.loads(examples.POSITION_SHORT)
    body.update(position_id=position_id, asset=asset, size=size, trace_id=trace_id,
                timestamp=datetime.now(timezone.utc).isoformat())
    body.update(fields)
    return json.dumps(body).encode()


def publish(channel, queue: str, body: bytes) -> None:
    # position-manager sends no headers and a persistent message (CONTRACTS §3.1).
    channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))


def execute(dsn: str, sql: str, args=()) -> list:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else []


def open_position(dsn: str, asset: str, size: str, entry: str, current: str | None, *,
                  position_id: str | None = None, created_at: datetime | None = None,
                  last_updated: datetime | None = None) -> str:
    """Insert or write the position row of `asset`, one per asset and mode as position-manager keeps
    it (CONTRACTS §3.5): a later write keeps the row's id and created_at and bumps its version."""
    position_id = position_id or str(uuid.uuid4())
    rows = execute(dsn, """
        INSERT INTO positions (id, asset, size, average_entry_price, current_price, last_updated, created_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (asset, mode) DO UPDATE SET size = EXCLUDED.size,
            average_entry_price = EXCLUDED.average_entry_price, current_price = EXCLUDED.current_price,
            last_updated = EXCLUDED.last_updated, version = positions.version + 1
        RETURNING id::text""",
            (position_id, asset, size, entry, current, last_updated or utc_now(), created_at or utc_now()))
    return rows[0][0]


def mark_price(dsn: str, asset: str, price: str, size: str | None = None) -> None:
    """A position-manager write: new mark (and size), version bumped."""
    execute(dsn, "UPDATE positions SET current_price = %s, size = coalesce(%s, size), last_updated = %s,"
                 " version = version + 1 WHERE asset = %s", (price, size, utc_now(), asset))


def stored_state(dsn: str, position_id: str) -> dict | None:
    rows = execute(dsn, "SELECT state FROM msd.position_exit_state WHERE position_key = %s", (position_id,))
    return rows[0][0] if rows else None


class SignalReader:
    """Collects every message on the signals queue; each must pass the test-side contract check."""

    def __init__(self, url: str):
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.conn.channel()
        self.channel.queue_declare(SIGNALS_QUEUE, durable=True)
        self.received: dict[str, tuple[dict, dict]] = {}     # signal_id -> (body, headers)

    def poll(self) -> None:
        while True:
            method, properties, body = self.channel.basic_get(SIGNALS_QUEUE, auto_ack=True)
            if method is None:
                return
            signal = json.loads(body)
            found = problems(signal)
            assert not found, (found, signal)
            # Redeliveries of the shared outbox carry the same signal_id: one signal, not two.
            self.received[signal["signal_id"]] = (signal, properties.headers or {})

    def for_position(self, position_id: str) -> list[tuple[dict, dict]]:
        self.poll()
        return [(s, h) for s, h in self.received.values() if (s.get("metadata") or {}).get("position_id") == position_id]

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()
