"""Each strategy's `random.Random`, continued across restarts instead of replayed from the seed.

Before a strategy's first decision its stream is restored from `msd.strategy_random_state`
(same seed: the saved state; otherwise a fresh generator from the seed). After decisions that
drew from it, the state is saved at most once per `SAVE_EVERY_S` and when the role stops
cleanly, in one statement that does not wait for the WAL flush, so a crash of msd can replay at
most the last second's draws (never the stream from its seed, the bug this fixed). It used to be saved after every turn that
emitted a signal: a round trip that held the loop between ticks (issue 13), and written with
the turn's outbox rows its 7 KB of state lengthened every signal's commit. While the database
cannot be read, a strategy whose stream is not restored yet is not evaluated (it would repeat
the stream).
"""
from __future__ import annotations

import logging
import random
import time
from typing import Iterable

from msd.errors import DatabaseUnavailable
from msd.store.db import Database
from msd.store.random_state import RandomState, load_random_states, save_random_states
from msd.strategies.params import StrategyParams

log = logging.getLogger("msd.signaller")
SAVE_EVERY_S = 1.0


class RandomStreams:
    def __init__(self, db: Database):
        self.db = db
        self.rngs: dict[str, random.Random] = {}
        self.seeds: dict[str, int] = {}
        self.draws: dict[str, int] = {}
        self.restored: set[str] = set()
        self.dirty: set[str] = set()
        self.next_save = 0.0

    def configure(self, strategies: Iterable[StrategyParams]) -> None:
        """Track the configured strategies; a changed seed starts a new stream."""
        wanted = {p.id: p.seed for p in strategies}
        if (set(self.seeds) - set(wanted)) & self.dirty:
            self.save(force=True)       # a removed strategy's last draws (it may come back)
        for sid in list(self.seeds):
            if sid not in wanted:
                for table in (self.rngs, self.seeds, self.draws):
                    table.pop(sid, None)
                self.restored.discard(sid)
                self.dirty.discard(sid)
        for sid, seed in wanted.items():
            if self.seeds.get(sid) != seed:
                self.seeds[sid], self.draws[sid] = seed, 0
                self.rngs[sid] = random.Random(seed)
                self.restored.discard(sid)

    def ready(self, sid: str) -> bool:
        """True once the stream of `sid` continues from where the last run left it."""
        if sid in self.restored:
            return True
        missing = [s for s in self.seeds if s not in self.restored]
        try:
            with self.db.transaction() as conn:
                saved = load_random_states(conn, missing)
        except DatabaseUnavailable:
            return False
        for other in missing:
            row = saved.get(other)
            if row is not None and row.seed == self.seeds[other]:
                self.rngs[other].setstate(row.state)
                self.draws[other] = row.draws
                log.info("strategy %s continues its random stream after %d decisions", other, row.draws,
                         extra={"strategy": other})
            self.restored.add(other)
        return True

    def rng(self, sid: str) -> random.Random:
        return self.rngs[sid]

    def drew(self, sid: str) -> None:
        self.draws[sid] += 1
        self.dirty.add(sid)

    def save(self, *, force: bool = False) -> None:
        """Persist the dirty streams, at most every SAVE_EVERY_S unless `force` (a clean stop):
        one round trip, no WAL wait."""
        if not self.dirty or (not force and time.monotonic() < self.next_save):
            return
        self.next_save = time.monotonic() + SAVE_EVERY_S
        try:
            with self.db.autocommit() as conn:
                save_random_states(conn, self._dirty_states())
        except DatabaseUnavailable:
            return      # kept dirty; saved with the next try
        self.dirty.clear()

    def _dirty_states(self) -> list[RandomState]:
        return [RandomState(sid, self.seeds[sid], self.draws[sid], self.rngs[sid].getstate())
                for sid in sorted(self.dirty) if sid in self.rngs]
