"""Should an exit that waited unsent in the outbox still go out, given the positions row now?

An exit recorded while the broker was down is published when it comes back (or after a
restart). order-manager sends an exit `reduceOnly` only while position-manager shows a position
it reduces (CONTRACTS §3.6): sent after that position closed or flipped, or for more than it
still holds, the same order opens a position the other way. So before a pending exit goes out it
is checked against the row read just before publishing; one that could close more than the row
now shows is voided (never sent) and the position is decided again from that row.

`sift_unsent` is the whole decision for one flush: pure, no clock, no I/O.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Iterable, Mapping

from msd.rules.types import InFlight, RowFacts, Side
from msd.values.parsing import finite_decimal


class VoidReason(str, Enum):
    """Why a pending exit is voided instead of sent (a metric label and the outbox's last_error)."""

    POSITION_GONE = "position_gone"          # no positions row any more
    POSITION_FLAT = "position_flat"          # the row shows size 0
    POSITION_FLIPPED = "position_flipped"    # the row shows a position on the other side
    CLOSED_SINCE = "position_closed_since"   # same side, but closed and reopened after the decision
    POSITION_SMALLER = "position_smaller"    # the row holds less than this exit (and those ahead) would close
    UNREADABLE = "unreadable_exit"           # its metadata names no position, side or quantity

    @property
    def text(self) -> str:
        return _TEXTS[self]


_TEXTS = {
    VoidReason.POSITION_GONE: "position closed/changed before it was sent: no positions row",
    VoidReason.POSITION_FLAT: "position closed/changed before it was sent: the row is flat",
    VoidReason.POSITION_FLIPPED: "position closed/changed before it was sent: the row is on the other side",
    VoidReason.CLOSED_SINCE: "position closed/changed before it was sent: closed and reopened since",
    VoidReason.POSITION_SMALLER: "position closed/changed before it was sent: the row is smaller than the exit",
    VoidReason.UNREADABLE: "exit metadata names no position, side or quantity",
}


@dataclass(frozen=True)
class UnsentExit:
    """A pending exit as its signal's metadata describes it (msd.rules.types.ExitDecision.metadata)."""

    signal_id: str
    position_id: str | None
    side: Side | None               # of the position it closes
    quantity: Decimal | None        # base units it closes
    decided_at: datetime | None     # msd's clock: the row's last_updated is known only from its InFlight

    @classmethod
    def from_metadata(cls, signal_id: str, metadata: Mapping[str, Any] | None,
                      decided_at: datetime | None = None) -> "UnsentExit":
        meta = metadata if isinstance(metadata, Mapping) else {}
        try:
            side = Side(meta.get("position_side"))
        except ValueError:
            side = None
        quantity = finite_decimal(meta.get("quantity"))
        quantity = quantity if quantity is not None and quantity > 0 else None
        position_id = meta.get("position_id")
        return cls(signal_id, position_id if isinstance(position_id, str) else None, side, quantity, decided_at)


def void_reason(exit: UnsentExit, row: RowFacts | None, ahead: Decimal, flight: InFlight | None,
                *, closed_between: bool = False) -> VoidReason | None:
    """None if `exit` may still go out; else why not.

    `row`: the position's row now (None: there is none); `ahead`: base units that exits going out
    before this one (or sent and not yet shown by the row) will close; `flight`: the exit's entry
    in the stored state, if it still has one (it knows the row the exit was decided on);
    `closed_between`: the fills since that row went flat or crossed zero (a fill-path close and
    reopen, which leaves `closed_at` NULL)."""
    if exit.position_id is None or exit.side is None or exit.quantity is None:
        return VoidReason.UNREADABLE
    if row is None:
        return VoidReason.POSITION_GONE
    if row.size == 0:
        return VoidReason.POSITION_FLAT
    if Side.of(row.size) is not exit.side:
        return VoidReason.POSITION_FLIPPED
    decided_row_at = flight.decided_row_at if flight is not None else exit.decided_at
    # The websocket path sets closed_at on a close and never resets it: only a later one counts.
    if closed_between or (row.closed_at is not None and decided_row_at is not None
                          and row.closed_at > decided_row_at
                          and (flight is None or row.version > flight.decided_version)):
        return VoidReason.CLOSED_SINCE
    if abs(row.size) < ahead + exit.quantity:
        return VoidReason.POSITION_SMALLER
    return None


def unseen_quantity(flights: Iterable[InFlight], row: RowFacts | None) -> Decimal:
    """Base units that published exits will still close which `row` cannot show yet (it was not
    written since they were decided): a pending exit must fit in what is left after them."""
    if row is None:
        return Decimal(0)
    return sum((f.quantity for f in flights if f.published and f.decided_version >= row.version), Decimal(0))


def sift_unsent(exits: Iterable[UnsentExit], rows: Mapping[str, RowFacts | None],
                flights: Mapping[str, tuple[InFlight, ...]], closed: frozenset[str] = frozenset()
                ) -> dict[str, VoidReason]:
    """The pending exits (oldest first, as they would go out) that must be voided, by signal id.

    `rows`: each named position's row now (None: none), every one read (a failed read is no
    answer: the caller sifts nothing then); `flights`: each position's exits in
    flight in the stored state; `closed`: positions whose fills crossed zero since the decision.
    The exits of one position that may go out are counted in order: each must fit in what the
    row shows after the ones before it."""
    voided: dict[str, VoidReason] = {}
    ahead: dict[str, Decimal] = defaultdict(Decimal)
    started: set[str] = set()
    for exit in exits:
        pid = exit.position_id
        row = rows[pid] if pid is not None else None      # a row that could not be read: not sifted
        own = flights.get(pid, ()) if pid is not None else ()
        if pid is not None and pid not in started:
            started.add(pid)
            ahead[pid] = unseen_quantity((f for f in own if f.signal_id != exit.signal_id), row)
        flight = next((f for f in own if f.signal_id == exit.signal_id), None)
        reason = void_reason(exit, row, ahead[pid] if pid is not None else Decimal(0), flight,
                             closed_between=pid in closed)
        if reason is None:
            ahead[pid] += exit.quantity
        else:
            voided[exit.signal_id] = reason
    return voided
