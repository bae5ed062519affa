"""The signaller's exposure read with its in-flight signals kept in memory
(msd.roles.signaller.exposure + msd.strategies.in_flight) against the rule stated in
SQL over msd.signals (in_flight_notional), on the real database, with an injected clock far from
the wall clock."""
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from msd.bus.signal_format import signal_to_wire
from msd.store.db import Database
from msd.store.migrate import apply_migrations
from msd.store.neighbours import create_neighbour_tables, read_open_exposure
from msd.roles.signaller.exposure import exposure_and_in_flight
from msd.store.outbox import in_flight_notional, insert_signal, mark_sent
from msd.strategies.in_flight import InFlightSignal, InFlightSignals
from msd.values.messages import MarketDataSnapshot, TradingSignal

T0 = datetime(2031, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def signal(side: str, amount: str, seconds: float, asset: str = "BTCUSDT") -> TradingSignal:
    return TradingSignal(signal_id=str(uuid.uuid4()), signal_type=side, asset=asset, amount=Decimal(amount),
                         confidence=0.7, timestamp=at(seconds), strategy_id="s1", model_version=None,
                         is_warmup=True, market_data_snapshot=MarketDataSnapshot(Decimal("95000"), None, None, None),
                         metadata={}, trace_id=str(uuid.uuid4()))


@pytest.fixture
def db(fresh_pg_dsn):
    apply_migrations(fresh_pg_dsn)
    database = Database(fresh_pg_dsn)
    with database.transaction() as conn:
        create_neighbour_tables(conn)
    yield database
    database.close()


def sent(db: Database, *signals: TradingSignal) -> None:
    with db.transaction() as conn:
        for item in signals:
            insert_signal(conn, item, signal_to_wire(item), "warmup")
        mark_sent(conn, [item.signal_id for item in signals])


def ordered(db: Database, item: TradingSignal) -> None:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO orders (order_id, signal_id, asset, side, order_type, quantity, status)
                       VALUES (%s, %s, %s, 'Buy', 'Market', 0.001, 'pending')""",
                    (f"o-{item.signal_id}", item.signal_id, item.asset))


def both(db: Database, kept: InFlightSignals, now: datetime, asset: str = "BTCUSDT") -> tuple[Decimal, Decimal]:
    """(the in-memory read's in-flight sum, the SQL rule's) at `now`; the shared part must agree."""
    with db.autocommit() as conn:
        shared, in_memory = exposure_and_in_flight(conn, asset, kept, now)
        assert shared == read_open_exposure(conn, asset)
        return in_memory, in_flight_notional(conn, asset, kept.window.total_seconds(), now)


def test_in_memory_in_flight_matches_the_sql_rule_through_orders_expiry_window_and_reseed(db):
    a, b, c = signal("buy", "10", 0), signal("sell", "4", 0.1), signal("buy", "7", 0.2, asset="ETHUSDT")
    sent(db, a, b, c)
    kept = InFlightSignals(window_s=120, young_s=0.5, recheck_s=1.0)
    assert both(db, kept, at(0.3)) == (Decimal(6), Decimal(6))           # seeded from msd.signals
    assert both(db, kept, at(0.3), "ETHUSDT") == (Decimal(7), Decimal(7))
    ordered(db, a)                                                        # order-manager took it
    assert both(db, kept, at(0.4)) == (Decimal(-4), Decimal(-4))         # young: seen at once

    d = signal("buy", "5", 1.0)
    sent(db, d)
    kept.add(InFlightSignal.of(d))
    assert both(db, kept, at(3.0)) == (Decimal(1), Decimal(1))
    ordered(db, d)
    # an order row written late is seen at the next look-up, at most recheck_s later; until
    # then the signal counts twice (the cap errs towards less exposure)
    assert both(db, kept, at(3.6)) == (Decimal(1), Decimal(-4))
    assert both(db, kept, at(4.0)) == (Decimal(-4), Decimal(-4))

    with db.transaction() as conn, conn.cursor() as cur:                  # the outbox expired b
        cur.execute("UPDATE msd.signals SET outbox_state = 'expired' WHERE signal_id = %s", (b.signal_id,))
    kept.settle("BTCUSDT", [b.signal_id])
    assert both(db, kept, at(4.1)) == (Decimal(0), Decimal(0))

    e = signal("sell", "3", 5.0)
    sent(db, e)
    kept.add(InFlightSignal.of(e))
    assert both(db, kept, at(6.0)) == (Decimal(-3), Decimal(-3))
    kept.forget()                                                         # a failed round trip
    assert both(db, kept, at(6.1)) == (Decimal(-3), Decimal(-3))         # seeded again
    assert both(db, kept, at(125.0)) == (Decimal(0), Decimal(0))         # e's window is over
    assert both(db, kept, at(125.0), "ETHUSDT") == (Decimal(0), Decimal(0))


def test_exposure_read_summed_every_recent_signal_of_the_asset(db):
    """Regression (issue 13): each exposure read summed all of the asset's signals of the last
    two minutes with no order row, which with no order-manager consuming is every one (24,000
    rows at 200 signals/s) and was the signal path's largest stage. Now a read looks up only the
    young signals and those due again."""
    many = [signal("buy", "1", i * 0.01) for i in range(300)]
    sent(db, *many)
    kept = InFlightSignals(window_s=120, young_s=0.5, recheck_s=1.0)
    assert both(db, kept, at(3.0)) == (Decimal(300), Decimal(300))      # the first read looks at all
    # those still young at the first read are looked up once more when they leave their youth
    young = {s.signal_id for s in many if at(3.0) - s.timestamp < timedelta(seconds=0.5)}
    assert set(kept.to_check("BTCUSDT", at(3.6))) == young and 40 < len(young) < 60
    assert kept.to_check("BTCUSDT", at(3.7)) == []                       # then none until recheck_s
    fresh = signal("buy", "1", 3.65)
    sent(db, fresh)
    kept.add(InFlightSignal.of(fresh))
    assert kept.to_check("BTCUSDT", at(3.7)) == [fresh.signal_id]
    # recheck_s after the first read: the others again, and the fresh one (still young)
    assert set(kept.to_check("BTCUSDT", at(4.0))) == {s.signal_id for s in many} - young | {fresh.signal_id}
