"""The exit role reading the positions table (CONTRACTS §3.5): a row read after an event, every
open row at each verification, and what each read changes in the book (the step's `RowRead`,
msd.strategies.exit_step, which applies msd.rules.note_row).

`PositionReading` is the part of msd.roles.exits.main.ExitRole that does it; the role's book,
tables and debouncer are its state.
"""
from __future__ import annotations

import logging
from collections import deque
from datetime import datetime

from msd.errors import DatabaseUnavailable
from msd.roles.exits.tables import row_facts
from msd.strategies.exit_step import RowNoted, RowRead, step
from msd.rules import ExitState, row_order
from msd.store.neighbours import PositionRow

log = logging.getLogger("msd.exits")
# Positions of a verification evaluated per turn: each costs ~0.25 ms (more on a loaded machine),
# and an update arriving meanwhile waits for the whole batch (50 made a 12-30 ms stall).
VERIFY_BATCH = 10
PositionId = tuple[str, str]        # (asset, position id)


class PositionReading:
    def apply_row(self, pid: PositionId, row: PositionRow | None, now: datetime, seen_by: str = "table") -> None:
        """What a read of the position's row changes (the step's RowRead). `pid` is the book's key;
        the row's own asset wins (a state kept under another asset is dropped and rebuilt)."""
        if row is not None and row.asset != pid[0]:
            log.warning("positions row %s is %s, not %s: its state is rebuilt from the row", pid[1], row.asset,
                        pid[0], extra={"position_id": pid[1], "asset": row.asset})
            self.put(pid, None)
            pid = (row.asset, pid[1])
        state = self.book.get(pid)
        if row is None:
            if state is not None:
                log.info("position %s %s is no longer in the positions table", *pid,
                         extra={"position_id": pid[1], "asset": pid[0]})
            self.put(pid, None)
            return
        if self._left_alone(pid, row):
            return
        if (state is not None and state.row is not None and pid not in self.unverified
                and (row.version, row.last_updated) == (state.row.version, state.row.last_updated)):
            return                                  # nothing written since the last read
        facts = row_facts(row)
        changed = state is None or state.row is None or row_order(facts) != row_order(state.row)
        fill_entry = None
        if changed and facts.size != 0 and (facts.closed_at is not None or facts.average_entry_price is None):
            fill_entry = self.tables.fill_path_entry(facts, row)
        closed_between = changed and facts.size != 0 and self.tables.closed_between(state, facts)
        self.unverified.discard(pid)
        stepped = step(state, RowRead(facts, closed_between, fill_entry, seen_by), now)
        _log_row_outcome(pid, state, facts.version, stepped.state, stepped.first(RowNoted))
        self.put(pid, stepped.state)

    def read_unknown(self, now: datetime) -> None:
        """Learn which asset the rows that events named belong to (the event's asset is not
        used), and have them read again and decided like any evented position (evaluate_due). A
        failed read is left to the next verification, which reads every open row."""
        ids, self.unknown = sorted(self.unknown), {}
        rows = self.tables.rows(ids)
        for position_id in ids:
            if rows is None or position_id not in rows:
                continue
            row, event = rows[position_id], self.context.get(position_id)
            if row is None or (row.size == 0 and row.mode != "hedge"):
                if row is None:
                    self.skip("position_not_in_table", f"no positions row for position {position_id}",
                              self.event_context(("", position_id)))
                elif event is not None and event.size != 0:
                    # A late or redelivered update of a position the table shows flat.
                    self.skip("stale_update", f"position {position_id} is flat in the positions table",
                              self.event_context(("", position_id)))
                self.context.pop(position_id, None)
                continue
            pid = (row.asset, position_id)
            self.ids[position_id] = pid
            self.reread.add(pid)
            self.debouncer.offer(pid, pid, now)

    def _left_alone(self, pid: PositionId, row: PositionRow) -> bool:
        """A hedge-mode row or a disabled asset: refused (msd.roles.exits.main.ExitRole.refuse)."""
        if row.mode == "hedge":
            self.refuse(pid, "hedge_mode", "hedge-mode row (long_size/short_size): msd does not read it by "
                                           "the sign of size and leaves it alone")
            return True
        if not self.config.enabled_for(row.asset):
            self.refuse(pid, "disabled", f"exits.per_asset.{row.asset}.enabled is false")
            return True
        self.refused.pop(pid, None)
        return False

    def verify(self, now: datetime) -> None:
        """Read every open position and every one in the book from the table, then evaluate all."""
        open_rows = self.tables.open_rows()
        if open_rows is None:
            return
        others = sorted(pid for pid in self.book if pid not in open_rows)
        extra = self.tables.rows([pid[1] for pid in others]) if others else {}
        if extra is None:
            return
        for pid, row in open_rows.items():
            self.contained("positions row", {"position_id": pid[1], "asset": pid[0]},
                           lambda pid=pid, row=row: self.apply_row(pid, row, now))
        for pid in others:
            if pid[1] not in extra:         # its read failed: nothing is known, nothing changes
                continue
            self.contained("positions row", {"position_id": pid[1], "asset": pid[0]},
                           lambda pid=pid: self.apply_row(pid, extra[pid[1]], now))
        self.refused = {pid: why for pid, why in self.refused.items() if pid in open_rows}
        self.to_verify = deque(sorted(self.book))      # evaluated a batch per turn (evaluate_verified)

    def evaluate_verified(self, now: datetime) -> None:
        """Evaluate the next few positions of the last verification: a few thousand evaluations in
        one turn would hold up the position updates that arrive meanwhile."""
        trigger = "poll" if self.mode == "fallback" else "verify"
        for _ in range(min(VERIFY_BATCH, len(self.to_verify))):
            self.decide_one(self.to_verify.popleft(), now, trigger)

    def evaluate_due(self, due: list[PositionId], now: datetime) -> None:
        stale = sorted(pid for pid in due if pid in self.reread)
        if stale:
            try:
                rows = self.tables.rows([pid[1] for pid in stale])
            except DatabaseUnavailable:
                for pid in due:         # what was not evaluated waits for the database
                    self.debouncer.offer(pid, pid, now)
                raise
            for pid in stale:
                if rows is None or pid[1] not in rows:
                    # The read failed (said and counted where it failed): the state stays as it is;
                    # still marked for a re-read, the row is read again at the next evaluation.
                    continue
                self.reread.discard(pid)
                self.contained("positions row", {"position_id": pid[1], "asset": pid[0]},
                               lambda pid=pid: self.apply_row(pid, rows[pid[1]], now, "event"))
        for pid in due:
            self.decide_one(pid, now, "event" if pid in stale else "price")


def _log_row_outcome(pid: PositionId, before: ExitState | None, version: int, new: ExitState | None,
                     outcome: RowNoted) -> None:
    """A position opened, replaced or closed, and the exits the row shows done: one line each."""
    if outcome.change in ("opened", "new_position", "closed") and (before is not None or outcome.change != "closed"):
        log.info("position %s %s: %s%s", pid[0], pid[1], outcome.change.replace("_", " "),
                 f" ({new.side.value} {new.size} at {new.entry_price}, opened {new.opened_at.isoformat()} "
                 f"by {new.opened_by})" if new is not None else "",
                 extra={"position_id": pid[1], "asset": pid[0], "change": outcome.change})
    for flight in outcome.released:
        log.info("exit %s of %s %s seen in the positions table (version %d)", flight.signal_id, *pid,
                 version, extra={"signal_id": flight.signal_id, "position_id": pid[1]})
