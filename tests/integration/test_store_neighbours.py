"""The shared orders/positions tables: created for the paper exchange, read fail-closed."""
import uuid
from decimal import Decimal

import pytest

from msd.store.db import Database
from msd.store.neighbours import SharedSchemaError, create_neighbour_tables, read_open_exposure

pytestmark = pytest.mark.integration

D = Decimal


@pytest.fixture
def db(fresh_pg_dsn):
    database = Database(fresh_pg_dsn)
    with database.transaction() as conn:
        create_neighbour_tables(conn)
    yield database
    database.close()


def execute(db: Database, sql: str, *params) -> None:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(sql, params)


def add_order(db: Database, asset: str, side: str, order_type: str, quantity: str,
              price: str | None, status: str, filled: str = "0",
              average_price: str | None = None) -> None:
    execute(db, """INSERT INTO orders (order_id, signal_id, asset, side, order_type, quantity,
                                       price, status, filled_quantity, average_price)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            str(uuid.uuid4()), str(uuid.uuid4()), asset, side, order_type, quantity, price, status,
            filled, average_price)


def add_position(db: Database, asset: str, size: str, entry: str | None, current: str | None,
                 mode: str = "one-way") -> None:
    execute(db, """INSERT INTO positions (asset, size, average_entry_price, current_price, mode)
                   VALUES (%s, %s, %s, %s, %s)""", asset, size, entry, current, mode)


def exposure(db: Database, asset: str):
    with db.transaction() as conn:
        return read_open_exposure(conn, asset)


def test_creating_twice_is_harmless(db):
    with db.transaction() as conn:
        create_neighbour_tables(conn)

    assert exposure(db, "BTCUSDT").is_flat


def test_exposure_counts_open_orders_and_open_positions_only(db):
    add_order(db, "BTCUSDT", "Buy", "Limit", "0.01", "94900", "partially_filled", "0.004", "94900")
    add_order(db, "BTCUSDT", "SELL", "Limit", "0.002", "96000", "pending")
    add_order(db, "BTCUSDT", "Buy", "Market", "0.001", None, "pending")
    add_order(db, "BTCUSDT", "Buy", "Limit", "0.5", "90000", "filled", "0.5", "90000")
    add_order(db, "BTCUSDT", "SELL", "Market", "0.5", None, "rejected")
    add_order(db, "ETHUSDT", "Buy", "Limit", "1", "3000", "pending")
    add_position(db, "BTCUSDT", "-0.003", "95000", "94000")
    add_position(db, "ETHUSDT", "0E-8", "3000", "3050")

    btc, eth = exposure(db, "BTCUSDT"), exposure(db, "ETHUSDT")

    assert (btc.open_orders, btc.open_buy_notional, btc.open_sell_notional,
            btc.unpriced_open_orders) == (3, D("569.4"), D("192"), 1)
    assert (btc.open_positions, btc.position_size, btc.position_notional,
            btc.unpriced_positions) == (1, D("-0.003"), D("282"), 0)
    assert not btc.is_flat
    assert (eth.open_orders, eth.open_positions, eth.position_size) == (1, 0, 0)


def test_position_without_prices_is_counted_as_unpriced(db):
    add_position(db, "SOLUSDT", "2", None, None)

    sol = exposure(db, "SOLUSDT")

    assert (sol.open_positions, sol.position_notional, sol.unpriced_positions) == (1, 0, 1)


def test_missing_column_is_named(db):
    execute(db, "ALTER TABLE positions DROP COLUMN current_price")

    with pytest.raises(SharedSchemaError, match="positions.current_price") as raised:
        exposure(db, "BTCUSDT")
    assert raised.value.missing == ("positions.current_price",)


def test_missing_table_is_named(db):
    execute(db, "DROP TABLE signal_order_relationships, orders")

    with pytest.raises(SharedSchemaError, match="orders"):
        exposure(db, "BTCUSDT")


def test_column_of_the_wrong_type_is_a_shared_schema_error(db):
    execute(db, "ALTER TABLE positions ALTER COLUMN size TYPE text")

    with pytest.raises(SharedSchemaError, match="shared schema unusable"):
        exposure(db, "BTCUSDT")


def test_fills_since_count_what_an_order_filled_after_since_not_its_cumulative_total(fresh_pg_dsn):
    """Regression (exit review 10): `orders.filled_quantity` is cumulative per order (CONTRACTS
    §2.2, §5), and an order that had filled 1 of its 2 before the row msd last read and 0.5 more
    after counted as a 1.5 sell after it: a long of 1 "crossed zero", a partial close was taken
    for a close and reopen and the position lost its peak and ladder. msd's own records of the
    order (its order events, cumulative too) say what was filled by then."""
    from datetime import datetime, timedelta, timezone
    from msd.roles.exits.tables import fills_of
    from msd.rules import crossed_zero
    from msd.store.migrate import apply_migrations
    from msd.store.neighbours import read_fills_since
    apply_migrations(fresh_pg_dsn)
    database = Database(fresh_pg_dsn)
    try:
        with database.transaction() as conn:
            create_neighbour_tables(conn)
        since = datetime.now(timezone.utc) - timedelta(minutes=1)
        naive = since.replace(tzinfo=None)
        for order_id, filled, created, updated in (("straddling", "1.5", naive - timedelta(minutes=2),
                                                    naive + timedelta(seconds=10)),
                                                   ("after", "0.2", naive + timedelta(seconds=5),
                                                    naive + timedelta(seconds=20)),
                                                   ("unrecorded", "0.1", naive - timedelta(minutes=3),
                                                    naive + timedelta(seconds=30))):
            execute(database, """INSERT INTO orders (order_id, signal_id, asset, side, order_type, quantity, status,
                                                     filled_quantity, average_price, created_at, updated_at)
                                 VALUES (%s, %s, 'CUMUSDT', 'SELL', 'Market', 2, 'partially_filled', %s, 100, %s, %s)""",
                    order_id, str(uuid.uuid4()), filled, created, updated)
        execute(database, """INSERT INTO msd.order_events (event_id, event_type, order_id, status, filled_quantity,
                                                           signal_id, asset, side, occurred_at, payload)
                             VALUES ('e1', 'partially_filled', 'straddling', 'partially_filled', 1, NULL, 'CUMUSDT',
                                     'sell', %s, '{}')""", since - timedelta(seconds=30))
        with database.autocommit() as conn:
            fills = read_fills_since(conn, "CUMUSDT", since)
    finally:
        database.close()
    assert [(f.side, f.filled_quantity) for f in fills] == [("sell", D("0.5")), ("sell", D("0.2")),
                                                           ("sell", D("0.1"))]
    assert not crossed_zero(D(1), fills_of(fills)), "1 - 0.5 - 0.2 - 0.1 is still long"
