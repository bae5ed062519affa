"""Exits that waited too long in the outbox are decided again instead of being sent stale.

An exit recorded while the broker is down waits in the outbox. Once it is older than
`exits.max_signal_age_s` it would close a position at a price that has moved, so the outbox
expires it (msd.roles.runtime.outbox.Expiry) and, in the same transaction, the stored exit
state forgets it (the step's `Forget`, msd.strategies.exit_step): its ladder step, breakeven
stop, cooldown and in-flight entry are undone, so nothing acts on an exit that never went
out. Once that committed, the book takes the same states and each position is re-read and
decided again at the current price: a new exit with a new signal_id, or none if the price
moved back.

`ExpiredExits` is the part of msd.roles.exits.main.ExitRole that does it.
"""
from __future__ import annotations

import logging

from msd.roles.runtime.outbox import Expiry
from msd.strategies.exit_step import Forget, Forgotten, step
from msd.rules import ExitState, InFlight
from msd.store.exit_state import save_states
from msd.store.outbox import ExpiredSignal

log = logging.getLogger("msd.exits")
EXIT_MODES = ("exit",)
PositionId = tuple[str, str]        # the book's key (see msd.roles.exits.main); only used as a key here


class ExpiredExits:
    def expiry(self, config) -> Expiry:
        """The outbox's expiry for exits (`config` is the exits section)."""
        return Expiry(modes=EXIT_MODES, max_age_s=config.max_signal_age_s,
                      on_expired=self.forget_unsent, after_commit=self.redecide_expired)

    def forgetting(self, expired: list[ExpiredSignal]) -> dict[PositionId, tuple[ExitState, tuple[InFlight, ...]]]:
        """The positions whose exits in flight include expired ones: their states with those
        forgotten, and the forgotten exits. Pure on the book (computed again after the commit)."""
        ids = frozenset(item.signal_id for item in expired)
        owners = sorted(pid for pid, state in self.book.items() if any(f.signal_id in ids for f in state.in_flight))
        now, forgotten = self.clock(), {}
        for pid in owners:
            stepped = step(self.book[pid], Forget(ids), now)
            forgotten[pid] = (stepped.state, stepped.first(Forgotten).flights)
        return forgotten

    def adopt_forgotten(self, unsent: list) -> dict[PositionId, tuple[ExitState, tuple[InFlight, ...]]]:
        """Once the transaction that forgot `unsent` exits (expired or voided) committed: the book
        takes the states it saved, and each position is re-read and decided again as it is now."""
        now = self.clock()
        forgotten = self.forgetting(unsent)
        for pid, (state, _) in forgotten.items():
            self.book[pid] = state                  # saved in the forgetting transaction
            self.dirty.discard(pid)
            self.reread.add(pid)                    # the size and price as they are now
            self.debouncer.offer(pid, pid, now)
        return forgotten

    def forget_unsent(self, conn, unsent: list) -> None:
        """In the transaction that expires or voids exits: the stored states forget them."""
        save_states(conn, [state.to_dict() for state, _ in self.forgetting(unsent).values()])

    def redecide_expired(self, expired: list[ExpiredSignal]) -> None:
        """Once the expiry committed: the book forgets them too, and the positions are decided again."""
        forgotten = self.adopt_forgotten(expired)
        for pid, (state, flights) in forgotten.items():
            asset, position_id = state.asset, state.key.position_id
            for flight in flights:
                log.warning("exit %s of %s %s (%s %s) expired unsent: undone, the position is decided again at "
                            "the current price", flight.signal_id, asset, position_id, flight.reason.value,
                            flight.quantity, extra={"signal_id": flight.signal_id, "position_id": position_id,
                                                    "asset": asset})
        known = {f.signal_id for _, flights in forgotten.values() for f in flights}
        for item in expired:
            if item.signal_id not in known:         # its position closed or changed since
                log.info("exit %s expired unsent; its position has no such exit in flight any more",
                         item.signal_id, extra={"signal_id": item.signal_id})
