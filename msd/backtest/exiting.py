"""The exit rules on a candle: msd.rules (the live exits role's pure functions), pessimistically.

The exit state of an asset's position is built as the exits role builds it, from reads of the
positions row (`note_row`, the row being position-manager's arithmetic from msd.exchange); the
candle's path (msd.backtest.fills.exit_path) is fed to `decide` point by point, the adverse
extreme before the favourable one. A decision is sent as the exits role sends it (an urgent,
hence Market, signal for exactly its quantity) and fills at once at its level (or the open on
a gap), half the spread worse; the next row read then releases it from flight.
The live exits role (msd/roles/exits) is not called: its I/O loop is being reworked elsewhere;
the decisions are the same functions it calls.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from msd.backtest.candles import Candle
from msd.backtest.fills import PathPoint, exit_base_price, exit_path, worse
from msd.exchange.positions import PositionState
from msd.rules import ExitDecision, ExitRules, ExitState, Instrument, RowFacts, decide, note_row

NAMESPACE = uuid.UUID("0b5e3f7a-8c1d-4a2e-b6f9-3d7c2e1a9f40")


@dataclass(frozen=True)
class ExitFill:
    decision: ExitDecision
    point: PathPoint
    base: Decimal              # the price before the spread (the level, or the open on a gap)
    price: Decimal             # the fill, half the spread worse
    signal_id: str


def row_facts(asset: str, position: PositionState, version: int) -> RowFacts:
    """The positions row as the exits role reads it: one stable id per asset (CONTRACTS §3.5)."""
    return RowFacts(position_id=str(uuid.uuid5(NAMESPACE, asset)), asset=asset, size=position.size,
                    average_entry_price=position.average_entry_price, current_price=position.current_price,
                    version=version, last_updated=position.last_updated, closed_at=position.closed_at)


def read_row(state: ExitState | None, asset: str, position: PositionState, version: int, now: datetime) -> ExitState | None:
    return note_row(state, row_facts(asset, position, version), now).state


def exit_on_path(state: ExitState, points: tuple[PathPoint, ...], rules: ExitRules, instrument: Instrument,
                 half_spread: Decimal, next_id) -> tuple[ExitState, ExitFill | None, int]:
    """The first exit the rules send along `points` (the state it leaves and how many points were
    used), or none. The caller applies the fill, reads the row again and goes on with the rest
    of the path; a second exit in one candle is then paced by the rules' own cooldown."""
    closing_side = "SELL" if state.row.size > 0 else "Buy"
    for used, point in enumerate(points, start=1):
        if point.at < state.opened_at:
            continue
        signal_id = next_id()
        verdict = decide(state, point.price, rules, instrument, point.at, signal_id)
        if verdict.decision is None:
            state = verdict.state
            continue
        level = verdict.decision.rule_params.get("threshold_price")
        base = exit_base_price(point, Decimal(level) if level is not None else None)
        return verdict.sent_state, ExitFill(verdict.decision, point, base, worse(closing_side, base, half_spread),
                                            signal_id), used
    return state, None, len(points)


def candle_path(long: bool, candle: Candle, length: timedelta) -> tuple[PathPoint, ...]:
    return exit_path(long, candle, length)
