"""msd.learning.records.DecisionReads (a protocol the learning side owns) on PostgreSQL: the daemon's side of the store contract
(tests/integration/test_decision_store_contract.py). Every read takes the caller's `now`."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from msd.values.records import CostFill, Decision
from msd.store.datasets import LabelWindow, labelled_since_last_training, load_cost_fills, load_training_rows
from msd.store.db import Database
from msd.store.outbox import in_flight_notional


class PgDecisionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def decisions(self, strategy_id: str, horizon_s: float, lag_s: float) -> list[Decision]:
        with self.db.transaction() as conn:
            return load_training_rows(conn, strategy_id, LabelWindow(horizon_s, lag_s)).decisions

    def cost_fills(self, strategy_id: str, until: datetime | None) -> list[CostFill]:
        with self.db.transaction() as conn:
            return load_cost_fills(conn, strategy_id, until=until)

    def labelled_counts(self, horizon_s: float, now: datetime) -> dict[str, int]:
        with self.db.transaction() as conn:
            return labelled_since_last_training(conn, horizon_s, now)

    def in_flight_notional(self, asset: str, recent_s: float, now: datetime) -> Decimal:
        with self.db.transaction() as conn:
            return in_flight_notional(conn, asset, recent_s, now)
