"""Value types of the exit engine: sides, reasons, the positions row, per-position state, decisions.

Numbers: every price, size, percentage and fraction is a `decimal.Decimal`. Inbound messages carry
Decimals (or numeric strings, as Bybit sends them); computing in Decimal keeps thresholds exact, so a
price that sits exactly on a take-profit level triggers it instead of missing by a float ulp.
Times: timezone-aware `datetime`s only, so holding times and cooldowns never mix naive and UTC.

The shared `positions` row is not a position (CONTRACTS §3.5): position-manager keeps one row per
asset and mode forever, with the same id and a `created_at` set once. A position is a stretch of
that row with a non-zero size of one sign; msd decides where it starts (`ExitState.opened_at`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from functools import partial
from typing import Any, Mapping

from msd.exchange.orders import DEFAULT_INSTRUMENT, InstrumentRules
from msd.values import parsing
from msd.values.parsing import InvalidValue

# 1: the first version, which took `opened_at` from the row's `created_at` (upgraded by sql/005).
STATE_FORMAT_VERSION = 2


class InvalidPositionData(InvalidValue):
    """An input of the exit engine cannot be used. Callers log it with context and skip the update.

    `field` (also `key`) names the offending input so the log line says which part of the message
    was bad.
    """

    def __init__(self, field_name: str, value: object, allowed: str):
        super().__init__(field_name, value, allowed,
                         message=f"{field_name}: {value!r} is invalid; expected {allowed}")
        self.field = field_name


# Numbers and times are read by msd.values.parsing, with the exit engine's error.
to_decimal = partial(parsing.to_decimal, error=InvalidPositionData)
check_aware = partial(parsing.check_aware, error=InvalidPositionData)
parse_time = partial(parsing.aware_time, error=InvalidPositionData)
plain = parsing.plain_decimal


class Side(str, Enum):
    """Direction of an open position."""

    LONG = "long"
    SHORT = "short"

    @classmethod
    def parse(cls, value: object) -> "Side":
        """Accept `long`/`short`, or Bybit's position sides `Buy` (long) / `Sell` (short)."""
        if isinstance(value, Side):
            return value
        text = str(value).strip().lower() if isinstance(value, str) else None
        found = {"long": cls.LONG, "buy": cls.LONG, "short": cls.SHORT, "sell": cls.SHORT}.get(text or "")
        if found is None:
            raise InvalidPositionData("side", value, "one of long, short, Buy, Sell")
        return found

    @classmethod
    def of(cls, size: Decimal) -> "Side | None":
        """The side of a signed size; None when flat."""
        return None if size == 0 else cls.LONG if size > 0 else cls.SHORT

    @property
    def closing_side(self) -> str:
        """The order side that reduces this position: a long is closed by selling, a short by buying."""
        return "sell" if self is Side.LONG else "buy"

    @property
    def sign(self) -> int:
        """+1 when a rising price is profit (long), -1 when a falling price is (short)."""
        return 1 if self is Side.LONG else -1


class ExitReason(str, Enum):
    """Why an exit fired. The value is what goes into signal metadata and metrics labels."""

    TAKE_PROFIT = "take_profit"
    TAKE_PROFIT_STEP = "take_profit_step"
    STOP_LOSS = "stop_loss"
    BREAKEVEN_STOP = "breakeven_stop"
    TRAILING_STOP = "trailing_stop"
    TIME_EXIT = "time_exit"


# May still fire for the remaining size while a take-profit slice is in flight.
PROTECTIVE = frozenset({ExitReason.STOP_LOSS, ExitReason.BREAKEVEN_STOP})


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidPositionData(name, value, "a non-empty string")
    return value


@dataclass(frozen=True)
class PositionKey:
    """Which row a position lives on and its side. Not an identity on its own: the row id is reused
    by every position ever held on the asset, so `ExitState.opened_at` tells positions apart."""

    asset: str
    side: Side
    position_id: str

    def __post_init__(self) -> None:
        _text("asset", self.asset)
        object.__setattr__(self, "side", Side.parse(self.side))
        _text("position_id", self.position_id)


@dataclass(frozen=True)
class RowFacts:
    """One read of the shared `positions` row (CONTRACTS §5), as the rules use it.

    `size` is signed (negative = short). `version` increments on every write of position-manager,
    `last_updated` and `closed_at` are position-manager's clock (aware UTC here).
    """

    position_id: str
    asset: str
    size: Decimal
    average_entry_price: Decimal | None
    current_price: Decimal | None
    version: int
    last_updated: datetime
    closed_at: datetime | None = None
    mode: str = "one-way"

    def __post_init__(self) -> None:
        _text("positions.id", self.position_id)
        _text("positions.asset", self.asset)
        object.__setattr__(self, "size", to_decimal("positions.size", self.size))
        for name in ("average_entry_price", "current_price"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, to_decimal(f"positions.{name}", value, positive=True))
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise InvalidPositionData("positions.version", self.version, "an integer")
        check_aware("positions.last_updated", self.last_updated)
        if self.closed_at is not None:
            check_aware("positions.closed_at", self.closed_at)

    @property
    def side(self) -> Side | None:
        return Side.of(self.size)

    def to_dict(self) -> dict[str, Any]:
        return {"position_id": self.position_id, "asset": self.asset, "size": str(self.size),
                "average_entry_price": _opt_str(self.average_entry_price),
                "current_price": _opt_str(self.current_price), "version": self.version,
                "last_updated": self.last_updated.isoformat(),
                "closed_at": self.closed_at.isoformat() if self.closed_at else None, "mode": self.mode}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RowFacts":
        _mapping("row", data)
        return cls(position_id=data.get("position_id"), asset=data.get("asset"), size=data.get("size"),
                   average_entry_price=data.get("average_entry_price"), current_price=data.get("current_price"),
                   version=data.get("version"), last_updated=parse_time("row.last_updated", data.get("last_updated")),
                   closed_at=_opt_time("row.closed_at", data.get("closed_at")), mode=data.get("mode") or "one-way")


# order-manager's rounding inputs for one symbol (CONTRACTS §3.6): one definition, in msd.exchange.
Instrument = InstrumentRules
# What order-manager uses for a symbol it has no instrument_info row for (CONTRACTS §3.6).
ORDER_MANAGER_DEFAULTS = DEFAULT_INSTRUMENT


@dataclass(frozen=True)
class InFlight:
    """An exit that was sent and whose effect has not been seen yet.

    It ends when a newer positions row shows it (`decided_version` < the row's version and the size
    came down), or when its own order ended without a fill (rejected, or cancelled/dry-run with
    nothing filled), which also undoes what it marked (`undo`). After `stalled`, a newer row ends
    it once it is `published`: nothing is re-sent blindly, the next exit needs a newer row, and
    while its outbox row may still go out (broker down) no second exit is decided beside it.
    """

    signal_id: str
    reason: ExitReason
    quantity: Decimal                   # base units the order is meant to close
    decided_version: int                # positions.version the exit was decided on
    decided_size: Decimal               # |size| that row showed
    decided_row_at: datetime            # and its last_updated
    sent_at: datetime
    undo: Mapping[str, Any] = field(default_factory=dict)   # ExitState fields before this exit (to_dict form)
    order_status: str | None = None     # the last status seen for its order, None = not seen yet
    order_filled: Decimal = Decimal(0)
    stalled: bool = False
    published: bool = False             # the broker confirmed its outbox row: it can no longer go out later

    def to_dict(self) -> dict[str, Any]:
        return {"signal_id": self.signal_id, "reason": self.reason.value, "quantity": str(self.quantity),
                "decided_version": self.decided_version, "decided_size": str(self.decided_size),
                "decided_row_at": self.decided_row_at.isoformat(),
                "sent_at": self.sent_at.isoformat(), "undo": dict(self.undo), "order_status": self.order_status,
                "order_filled": str(self.order_filled), "stalled": self.stalled, "published": self.published}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InFlight":
        _mapping("in_flight", data)
        try:
            reason = ExitReason(data.get("reason"))
        except ValueError:
            raise InvalidPositionData("in_flight.reason", data.get("reason"), "an exit reason") from None
        version = data.get("decided_version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidPositionData("in_flight.decided_version", version, "an integer")
        return cls(signal_id=_text("in_flight.signal_id", data.get("signal_id")), reason=reason,
                   quantity=to_decimal("in_flight.quantity", data.get("quantity"), positive=True),
                   decided_version=version,
                   decided_size=to_decimal("in_flight.decided_size", data.get("decided_size"), positive=True),
                   decided_row_at=parse_time("in_flight.decided_row_at", data.get("decided_row_at")),
                   sent_at=parse_time("in_flight.sent_at", data.get("sent_at")),
                   undo=dict(_mapping("in_flight.undo", data.get("undo") or {})),
                   order_status=data.get("order_status"),
                   order_filled=to_decimal("in_flight.order_filled", data.get("order_filled", "0"), non_negative=True),
                   stalled=bool(data.get("stalled")), published=bool(data.get("published")))


@dataclass(frozen=True)
class ExitState:
    """Everything msd knows and remembers about one position: its identity, the last row seen,
    the price extreme, what the rules already did, and the exits still in flight.

    `opened_at` is when msd first read this position's row non-zero after flat (`opened_by` says
    what made it read the row: "event", "table" (a verification), or "upgrade" for states of the
    first format). Events never set anything here: they can be older than the row or wrong
    (CONTRACTS §3.5), so they only make msd read the row. `entry_price` is None until the row has
    been read; `entry_source` says whether it is the row's or the fill path's (a websocket reopen
    keeps a stale row entry). `extreme_price` is the peak for a long and the trough for a short.
    `ladder_base_size` is |size| when the ladder started: steps are cumulative fractions of it,
    sized against what the row shows.
    """

    key: PositionKey
    opened_at: datetime
    opened_by: str = "table"
    entry_price: Decimal | None = None
    entry_source: str | None = None
    extreme_price: Decimal | None = None
    highest_pnl_pct: Decimal = Decimal(0)
    ladder_steps_done: tuple[int, ...] = ()
    ladder_base_size: Decimal | None = None
    stop_moved_to_breakeven: bool = False
    last_exit_at: datetime | None = None
    last_exit_reason: ExitReason | None = None
    in_flight: tuple[InFlight, ...] = ()
    row: RowFacts | None = None
    below_minimum_warned: bool = False
    rejections: int = 0                     # exits in a row refused by order-manager (rejected, dry_run)
    retry_at: datetime | None = None        # after one: no new decision before this (msd.rules.state)

    @property
    def asset(self) -> str:
        return self.key.asset

    @property
    def side(self) -> Side:
        return self.key.side

    @property
    def size(self) -> Decimal:
        """|size| of the row last seen (0 until the row has been read)."""
        return abs(self.row.size) if self.row is not None else Decimal(0)

    @property
    def ready(self) -> bool:
        """The row was read and has an entry price: the rules can be evaluated."""
        return self.row is not None and self.entry_price is not None and self.row.size != 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (Decimals as strings, times as ISO 8601 with offset) for a jsonb column."""
        return {
            "version": STATE_FORMAT_VERSION, "asset": self.key.asset, "side": self.key.side.value,
            "position_id": self.key.position_id, "opened_at": self.opened_at.isoformat(),
            "opened_by": self.opened_by, "entry_price": _opt_str(self.entry_price),
            "entry_source": self.entry_source, "extreme_price": _opt_str(self.extreme_price),
            "highest_pnl_pct": str(self.highest_pnl_pct), "ladder_steps_done": list(self.ladder_steps_done),
            "ladder_base_size": _opt_str(self.ladder_base_size),
            "stop_moved_to_breakeven": self.stop_moved_to_breakeven,
            "last_exit_at": _opt_iso(self.last_exit_at),
            "last_exit_reason": self.last_exit_reason.value if self.last_exit_reason else None,
            "in_flight": [f.to_dict() for f in self.in_flight],
            "row": self.row.to_dict() if self.row else None, "below_minimum_warned": self.below_minimum_warned,
            "rejections": self.rejections, "retry_at": _opt_iso(self.retry_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExitState":
        """Inverse of `to_dict`; a damaged row raises InvalidPositionData naming the field."""
        _mapping("exit_state", data)
        if data.get("version") != STATE_FORMAT_VERSION:
            raise InvalidPositionData("version", data.get("version"), f"{STATE_FORMAT_VERSION}")
        steps = data.get("ladder_steps_done")
        if not isinstance(steps, list) or not all(type(i) is int and i >= 0 for i in steps):
            raise InvalidPositionData("ladder_steps_done", steps, "a list of step indices >= 0")
        flags = {name: data.get(name, False) for name in ("stop_moved_to_breakeven", "below_minimum_warned")}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise InvalidPositionData(name, value, "true or false")
        flights = data.get("in_flight") or []
        if not isinstance(flights, list):
            raise InvalidPositionData("in_flight", flights, "a list")
        reason = data.get("last_exit_reason")
        try:
            last_reason = None if reason is None else ExitReason(reason)
        except ValueError:
            raise InvalidPositionData("last_exit_reason", reason, "an exit reason or null") from None
        return cls(
            key=PositionKey(data.get("asset"), Side.parse(data.get("side")), data.get("position_id")),
            opened_at=parse_time("opened_at", data.get("opened_at")),
            opened_by=str(data.get("opened_by") or "table"),
            entry_price=_opt_decimal("entry_price", data.get("entry_price")),
            entry_source=data.get("entry_source"),
            extreme_price=_opt_decimal("extreme_price", data.get("extreme_price")),
            highest_pnl_pct=to_decimal("highest_pnl_pct", data.get("highest_pnl_pct")),
            ladder_steps_done=tuple(sorted(set(steps))),
            ladder_base_size=_opt_decimal("ladder_base_size", data.get("ladder_base_size")),
            stop_moved_to_breakeven=flags["stop_moved_to_breakeven"],
            last_exit_at=_opt_time("last_exit_at", data.get("last_exit_at")),
            last_exit_reason=last_reason,
            in_flight=tuple(InFlight.from_dict(f) for f in flights),
            row=None if data.get("row") is None else RowFacts.from_dict(data["row"]),
            below_minimum_warned=flags["below_minimum_warned"],
            rejections=_count("rejections", data.get("rejections", 0)),
            retry_at=_opt_time("retry_at", data.get("retry_at")),
        )


def _mapping(name: str, data: object) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidPositionData(name, data, "a mapping produced by to_dict")
    return data


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidPositionData(name, value, "an integer >= 0")
    return value


def _opt_str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _opt_iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _opt_decimal(name: str, value: object) -> Decimal | None:
    return None if value is None else to_decimal(name, value, positive=True)


def _opt_time(name: str, value: object) -> datetime | None:
    return None if value is None else parse_time(name, value)


@dataclass(frozen=True)
class ExitDecision:
    """One exit the rules want sent.

    `quantity` is what order-manager must turn `amount` back into (CONTRACTS §3.6): base units,
    a multiple of the instrument's step, never more than the row's |size| (`row_size`). `amount` is
    `quantity` x `trigger_price` in USDT, exact (sent as a decimal string), and `trigger_price` is
    the price that fired the rule and goes into `market_data_snapshot.price`. `pnl_pct` is
    unrealised PnL at `trigger_price` in percent of entry. `rule_params` and `sizing` are JSON-safe.
    """

    key: PositionKey
    reason: ExitReason
    quantity: Decimal
    full_close: bool
    amount: Decimal
    trigger_price: Decimal
    entry_price: Decimal
    entry_source: str
    pnl_pct: Decimal
    row_size: Decimal
    decided_version: int
    decided_at: datetime
    opened_at: datetime
    rule_params: Mapping[str, object] = field(default_factory=dict)
    sizing: Mapping[str, object] = field(default_factory=dict)
    also_triggered: tuple[ExitReason, ...] = ()

    @property
    def side_to_send(self) -> str:
        """`sell` to close a long, `buy` to close a short."""
        return self.key.side.closing_side

    def metadata(self) -> dict[str, Any]:
        """JSON-safe metadata for the outgoing trading signal (Decimals as strings)."""
        return {
            "exit_reason": self.reason.value,
            "rule_params": dict(self.rule_params),
            "asset": self.key.asset,
            "position_side": self.key.side.value,
            "position_id": self.key.position_id,
            "position_opened_at": self.opened_at.isoformat(),
            "quantity": plain(self.quantity),
            "full_close": self.full_close,
            "position_size": plain(self.row_size),
            "positions_version": self.decided_version,
            "fraction": plain(self.quantity / self.row_size),
            "entry_price": str(self.entry_price),
            "entry_source": self.entry_source,
            "trigger_price": str(self.trigger_price),
            "pnl_pct": str(self.pnl_pct),
            "amount_usdt": plain(self.amount),
            "sizing": dict(self.sizing),
            "decided_at": self.decided_at.isoformat(),
            "also_triggered": [r.value for r in self.also_triggered],
        }
