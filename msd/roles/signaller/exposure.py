"""The signaller's exposure read: the shared tables and msd's own signals not visible there yet."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from msd.store.neighbours import Exposure, read_open_exposure_with
from msd.store.outbox import ORDERED_AMONG_SQL, recent_decisions
from msd.strategies.in_flight import InFlightSignal, InFlightSignals


def exposure_and_in_flight(conn, asset: str, in_flight: InFlightSignals, now: datetime) -> tuple[Exposure, Decimal]:
    """The shared tables' open orders and positions of `asset`, and the signed sum of msd's own
    signals not visible there yet, kept in `in_flight` (seeded from msd.signals on first use; the
    read asks which of them have an order row now): one round trip after the seed."""
    if not in_flight.seeded:
        in_flight.seed(InFlightSignal(*row) for row in recent_decisions(conn, in_flight.window.total_seconds(), now))
    ids = in_flight.to_check(asset, now)
    if ids:
        shared, (ordered,) = read_open_exposure_with(conn, asset, ORDERED_AMONG_SQL, {"in_flight_ids": ids})
        in_flight.settle(asset, ordered)
    else:
        shared, _ = read_open_exposure_with(conn, asset)
    return shared, in_flight.total(asset)
