"""Pending exits whose position changed while they waited are voided, not sent (issue #8).

An exit recorded while the broker is down waits in the outbox. If within its age limit the
position's row goes flat, flips, or shrinks below the exit (a manual close, another exit, a
liquidation), sending it when the broker is back would make order-manager open a position the
other way (CONTRACTS §3.6). So before each flush sends pending exits, their rows are read and
msd.rules.sift_unsent names the ones that may no longer go out: the outbox marks them `voided`
and, in the same transaction, the stored exit state forgets them (as for an expiry, expiry.py);
once committed, the book forgets them too and each position still open is read and decided
again. A row that could not be read voids nothing and sends nothing: the next flush retries.

`VoidedExits` is the part of msd.roles.exits.main.ExitRole that does it.
"""
from __future__ import annotations

import json
import logging
from typing import Mapping

from msd.errors import DatabaseUnavailable
from msd.roles.exits.expiry import EXIT_MODES
from msd.roles.exits.tables import row_facts
from msd.roles.runtime.outbox import Screen
from msd.rules import InFlight, RowFacts, Side, UnsentExit, sift_unsent
from msd.store.outbox import PendingSignal, VoidedSignal
from msd.values.parsing import from_iso

log = logging.getLogger("msd.exits")


def unsent_exit(item: PendingSignal) -> UnsentExit:
    """What the pending exit's own metadata says it closes."""
    try:
        metadata = json.loads(item.body).get("metadata")
    except (ValueError, AttributeError):
        metadata = None
    decided_at = from_iso(metadata.get("decided_at")) if isinstance(metadata, dict) else None
    return UnsentExit.from_metadata(item.signal_id, metadata, decided_at)


class VoidedExits:
    holding_unsent = False      # pending exits held because their rows cannot be checked (said once)

    def screen(self) -> Screen:
        """The outbox's check of pending exits before each flush sends them."""
        return Screen(modes=EXIT_MODES, check=self.check_unsent, on_voided=self.forget_unsent,
                      after_commit=self.redecide_voided)

    def check_unsent(self, pending: list[PendingSignal]) -> dict[str, tuple[str, str]] | None:
        """The pending exits to void (signal_id -> (reason, text)); None (nothing voided, nothing
        sent) while a row cannot be read or checked."""
        exits = [unsent_exit(item) for item in pending]
        ids = sorted({e.position_id for e in exits if e.position_id is not None})
        try:
            read = self.tables.rows(ids) if ids else {}
            if read is None or any(one not in read for one in ids):
                raise LookupError("positions rows could not be read")
            rows = {one: None if row is None else row_facts(row) for one, row in read.items()}
            flights = {pid[1]: state.in_flight for pid, state in self.book.items() if state.in_flight}
            closed = frozenset(e.position_id for e in exits if self._closed_between(e, rows, flights))
        except DatabaseUnavailable:
            raise
        except Exception as exc:        # an unusable row, a bug: nothing voided, nothing sent
            self.stats.error(f"pending exits held: {type(exc).__name__}: {exc}")
            (log.debug if self.holding_unsent else log.warning)(
                "pending exits held unsent: their positions rows cannot be checked (%s: %s); retried on every "
                "flush", type(exc).__name__, exc, extra={"position_ids": ids})
            self.holding_unsent = True
            return None
        if self.holding_unsent:
            self.holding_unsent = False
            log.info("pending exits checked against their positions rows again")
        return {signal_id: (reason.value, reason.text)
                for signal_id, reason in sift_unsent(exits, rows, flights, closed).items()}

    def _closed_between(self, exit: UnsentExit, rows: Mapping[str, RowFacts | None],
                        flights: Mapping[str, tuple[InFlight, ...]]) -> bool:
        """A fill-path close and reopen on the same side since the exit's row (two writes at least)."""
        row = rows.get(exit.position_id) if exit.position_id is not None else None
        flight = next((f for f in flights.get(exit.position_id, ()) if f.signal_id == exit.signal_id), None)
        if row is None or flight is None or Side.of(row.size) is not exit.side or row.closed_at is not None:
            return False
        if row.version < flight.decided_version + 2:
            return False
        return self.tables.crossed_since(row.asset, exit.side.sign * flight.decided_size, flight.decided_row_at)

    def redecide_voided(self, voided: list[VoidedSignal]) -> None:
        """Once committed: the book forgets them, the audit lines, and the positions are decided again."""
        forgotten = self.adopt_forgotten(voided)       # msd.roles.exits.expiry
        ids = {item.signal_id for item in voided}
        for pid in [pid for pid, signal_id in self.unsure.items() if signal_id in ids]:
            # Its write committed with only the reply lost; the book never held it, and now it is
            # voided: nothing to learn from the store (whose copy still has it in flight).
            del self.unsure[pid]
            if pid in self.book:
                self.dirty.add(pid)                 # the book's state, without it, replaces that copy
                self.reread.add(pid)
                self.debouncer.offer(pid, pid, self.clock())
        for item in voided:
            self.stats.voided[item.reason] += 1
            meta = item.body.get("metadata") or {}
            log.warning("EXIT VOIDED, not sent: %s %s %s of %s position %s (%s) waited %.0fs in the outbox and its "
                        "position changed meanwhile (%s); sent now it would close more than the row shows or open "
                        "a position the other way. Undone; the position is decided again from its row",
                        item.signal_id, item.signal_type, meta.get("quantity"), item.asset, meta.get("position_id"),
                        meta.get("exit_reason"), item.age_s, item.reason,
                        extra={"signal_id": item.signal_id, "position_id": meta.get("position_id"),
                               "asset": item.asset, "reason": item.reason})
