"""The exit engine's memory and bookkeeping around the pure rules (no I/O, no clock).

It holds the state of every position it watches, keyed by (asset, position id) with the side in
the state's own key, so a flip or a new position on the same asset starts over (`track` resets
it) and a closed position is forgotten. It applies the pacing the rules leave to their caller:
the per-asset rate limit, and the rule that a decision which is not sent keeps `track`'s state,
so a ladder step or a cooldown is never recorded for an exit that never left. Which states
changed since the last save is tracked here; the role writes them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Iterable

from msd.config import ExitsConfig
from msd.roles.exit_inputs import PriceQuote
from msd.rules import (
    AssetRateLimit, ExitDecision, ExitState, PositionView, in_cooldown, should_exit, take, track, would_allow,
)

PositionId = tuple[str, str]            # (asset, position id)
StateKey = tuple[str, "str | None", str]  # (asset, side or None for every side, position id)


@dataclass(frozen=True)
class Watched:
    """The last known facts about a position, so a price tick can re-evaluate it without the DB."""
    view: PositionView
    row_quote: PriceQuote | None         # positions.current_price as of the row's last write
    trace_id: str | None
    update_source: str


@dataclass(frozen=True)
class Evaluation:
    pid: PositionId
    view: PositionView
    quote: PriceQuote
    decision: ExitDecision | None
    state: ExitState                     # the state to keep once the decision is sent (or if there is none)
    unsent_state: ExitState              # the state to keep if the decision cannot be sent
    suppressed: str | None = None        # "cooldown" or "asset_rate": a rule fired but was held back


def position_id(view: PositionView) -> PositionId:
    return view.key.asset, view.key.position_id


class ExitEngine:
    def __init__(self, config: ExitsConfig):
        self.config = config
        self.states: dict[PositionId, ExitState] = {}
        self.watched: dict[PositionId, Watched] = {}
        self.buckets: dict[str, AssetRateLimit] = {}
        self._dirty: set[PositionId] = set()
        self._deleted: list[StateKey] = []

    def apply_config(self, config: ExitsConfig) -> None:
        """Take a reloaded `exits` section; per-position state is kept as it is.

        Rules are looked up per evaluation, so they apply from the next one. Rate buckets start
        full under a changed limit: carrying tokens over from a different rate would be a guess.
        """
        if config.asset_rate != self.config.asset_rate:
            self.buckets.clear()
        self.config = config

    def restore(self, states: Iterable[ExitState]) -> None:
        for state in states:
            self.states[(state.key.asset, state.key.position_id)] = state

    def known_opened_at(self, pid: PositionId) -> datetime | None:
        state = self.states.get(pid)
        return state.opened_at if state is not None else None

    def known(self) -> set[PositionId]:
        return set(self.states) | set(self.watched)

    def positions_of(self, asset: str) -> list[PositionId]:
        return [pid for pid in self.watched if pid[0] == asset]

    def watch(self, pid: PositionId, watched: Watched) -> None:
        self.watched[pid] = watched

    def close(self, pid: PositionId) -> None:
        """The position is flat: forget it, so a new position under the same id starts fresh."""
        self.watched.pop(pid, None)
        self._dirty.discard(pid)
        if self.states.pop(pid, None) is not None:
            self._deleted.append((pid[0], None, pid[1]))

    def evaluate(self, view: PositionView, quote: PriceQuote, now: datetime) -> Evaluation:
        """Run the rules on one position at one price; raises InvalidPositionData for bad inputs."""
        pid = position_id(view)
        rules = self.config.rules_for(view.key.asset)
        prior = self.states.get(pid)
        decision, state = should_exit(view, quote.price, prior, rules, now)
        if decision is None:
            held = "cooldown" if in_cooldown(state, rules, now) and self._would_fire(view, quote, state, now) else None
            return Evaluation(pid, view, quote, None, state, state, held)
        tracked = track(view, quote.price, prior, now)
        if not would_allow(self._bucket(view.key.asset), now):
            return Evaluation(pid, view, quote, None, tracked, tracked, "asset_rate")
        return Evaluation(pid, view, quote, decision, state, tracked)

    def _would_fire(self, view: PositionView, quote: PriceQuote, state: ExitState, now: datetime) -> bool:
        # Only to count what the cooldown held back; the probe's state is thrown away.
        probe, _ = should_exit(view, quote.price, replace(state, last_exit_at=None),
                               self.config.rules_for(view.key.asset), now)
        return probe is not None

    def _bucket(self, asset: str) -> AssetRateLimit:
        return self.buckets.get(asset, self.config.asset_rate)

    def keep(self, evaluation: Evaluation, sent: bool) -> None:
        """Remember the evaluation's outcome: the committed state if its exit was sent, else `track`'s."""
        pid = evaluation.pid
        new = evaluation.state if sent else evaluation.unsent_state
        old = self.states.get(pid)
        if old is not None and old.key.side is not new.key.side:
            self._deleted.append((pid[0], old.key.side.value, pid[1]))   # flipped: the old side's row goes
        if old != new:
            self.states[pid] = new
            self._dirty.add(pid)

    def spend(self, asset: str, now: datetime) -> None:
        """Take the rate-limit token of an exit that was recorded for sending."""
        _, self.buckets[asset] = take(self._bucket(asset), now)

    def changes(self) -> tuple[list[StateKey], list[dict[str, Any]]]:
        """Rows to delete and states to upsert since the last `saved()`, deletes first."""
        return list(self._deleted), [self.states[pid].to_dict() for pid in sorted(self._dirty)]

    def saved(self) -> None:
        self._deleted.clear()
        self._dirty.clear()
