"""Checking single inbound values for sense: bodies, text, numbers and timestamps (CONTRACTS.md §0.2, §0.3).

Pure and stdlib-only. Every rejection is `InvalidMessage(reason, detail)`; `reason` is one of
`REASONS` (a stable metric label), `detail` names the field path and the offending value.

What is refused, and why:
- a body larger than `Limits.max_body_bytes`, before anything else looks at it (`too_large`);
- a body that is not UTF-8 (`bad_encoding`: UTF-16, Latin-1, a byte-order mark), because the
  producers send `json.dumps(...)` encoded as UTF-8 and `json.loads` would otherwise guess;
- a body that does not start like a JSON object is refused without parsing it (`not_object` /
  `bad_json`), so a flood of junk costs a byte comparison, not a parse;
- text that PostgreSQL cannot store: lone UTF-16 surrogates (only reachable through `\\uD800`
  escapes) and NUL (`bad_text`), anywhere in the document, keys included;
- `NaN`/`Infinity` literals and floats that overflow to infinity (`bad_decimal`);
- numbers whose **magnitude** no exchange produces, per kind of field (`Magnitude`): never their
  precision, since position-manager sends 28 significant digits and `"0E+8"` (§0.3);
- timestamps before 2009 or more than `Limits.max_future_s` ahead of the receiver's clock.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from msd.errors import InvalidMessage
from msd.values.parsing import finite_decimal, from_epoch, from_iso

REASONS = frozenset({
    "bad_json", "not_object", "missing_field", "wrong_type", "bad_decimal", "bad_timestamp",
    "out_of_range", "unsupported_event_type", "bad_asset", "too_large", "bad_encoding", "bad_text",
})

# Nothing msd trades existed before 2009; an earlier time is a unit mistake (e.g. seconds read as ms).
EARLIEST_TIMESTAMP = datetime(2009, 1, 1, tzinfo=timezone.utc)
# 1e11 seconds is the year 5138 while 1e11 milliseconds is 1973, so the two ranges cannot be confused.
EPOCH_MILLISECONDS_ABOVE = 1e11
# A nonzero number smaller than this comes from no exchange (Bybit's finest tick is 1e-8; a
# computed percentage of an 8-dp PnL over a 1e12 notional is still above 1e-18).
SMALLEST_NONZERO = Decimal("1e-20")
MAX_TEXT_CHARS = 200            # ids, statuses, symbols: the shared tables hold at most 100
MAX_LONG_TEXT_CHARS = 4000      # free text such as a rejection reason

_EPOCH_TEXT = re.compile(r"\d+(\.\d+)?")
_ASCII_SPACE = b" \t\r\n"
# The first byte of any JSON value that is not an object (string, array, number, true/false/null).
_NOT_OBJECT_START = frozenset(b'"[-0123456789tfn')


@dataclass(frozen=True)
class Limits:
    """Receiver-side limits from config (`consumer.max_body_bytes`, `consumer.max_future_s`)."""
    max_body_bytes: int = 1 << 20
    max_future_s: float = 300.0


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Magnitude:
    """The largest absolute value a kind of field can have (exclusive) on a real exchange."""
    kind: str
    limit: Decimal


# The shared tables are DECIMAL(20,8): nothing position-manager or order-manager reads back from
# them can reach 1e12, so prices, fees and PnL are bounded there. Sizes are bounded tighter:
# Bybit's largest maximum order quantities are around 1e8 units (its contracts for tiny-priced
# tokens are quoted per 1000 or per 1,000,000 units to keep them so), so ten billion units in
# one order or position is a corrupt number, not a trade.
PRICE = Magnitude("price", Decimal("1e12"))
SIZE = Magnitude("size", Decimal("1e10"))
MONEY = Magnitude("money", Decimal("1e12"))          # fees and PnL in quote currency
PERCENT = Magnitude("percent", Decimal("1e6"))       # unrealized_pnl_pct: a 10,000-fold move
VOLUME = Magnitude("volume", Decimal("1e15"))        # 24 h volume and turnover of a whole market
MINUTES = 100_000_000                                 # time held: about 190 years


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- bodies -----------------------------------------------------------------------------------

def decode_object(body: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The JSON object in `body`; cheap checks first, the parse only for what could be an object."""
    if len(body) > limits.max_body_bytes:
        raise InvalidMessage("too_large", f"body: {len(body)} bytes exceeds consumer.max_body_bytes "
                                          f"{limits.max_body_bytes}")
    start = body.lstrip(_ASCII_SPACE)[:1]
    if start != b"{":
        if not start:
            raise InvalidMessage("bad_json", "body: empty")
        if start[0] in _NOT_OBJECT_START:
            raise InvalidMessage("not_object", f"body: expected a JSON object, got {shown(body[:40])}")
        if start[0] >= 0x80 or start == b"\x00":
            raise InvalidMessage("bad_encoding", f"body: not UTF-8 JSON (starts {shown(body[:8])})")
        raise InvalidMessage("bad_json", f"body: not JSON (starts {shown(body[:20])})")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage("bad_encoding", f"body: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        decoded = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except InvalidMessage:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError; too many digits in an int
        raise InvalidMessage("bad_json", f"body: {str(exc)[:200]}") from None
    if not isinstance(decoded, dict):
        raise InvalidMessage("not_object", f"body: expected a JSON object, got {type(decoded).__name__}")
    if "\\u" in text:   # lone surrogates and NUL can only arrive as \u escapes in valid UTF-8 JSON
        _check_storable(decoded, "")
    return decoded


def _refuse_constant(name: str) -> float:
    raise InvalidMessage("bad_decimal", f"body: {name} is not a number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise InvalidMessage("bad_decimal", f"body: {shown(text)} overflows a float")
    return number


def _check_storable(value: Any, path: str) -> None:
    if isinstance(value, str):
        storable_text(value, path or "body")
    elif isinstance(value, dict):
        for key, item in value.items():
            storable_text(key, f"{path}.<key>" if path else "<key>")
            _check_storable(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_storable(item, f"{path}[{index}]")


def storable_text(text: str, field: str) -> str:
    """`text` unchanged if PostgreSQL can store it (UTF-8 encodable, no NUL)."""
    if text.isascii() and "\x00" not in text:     # the common case, without an encode
        return text
    if "\x00" in text:
        raise InvalidMessage("bad_text", f"{field}: contains NUL, which text columns cannot hold")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidMessage("bad_text", f"{field}: lone surrogate {text[exc.start]!r} at {exc.start} "
                                         "is not storable as UTF-8") from None
    return text


def bounded_text(text: str, field: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    if len(text) > max_chars:
        raise InvalidMessage("out_of_range", f"{field}: {len(text)} characters, more than {max_chars}")
    return storable_text(text, field)


# --- timestamps -------------------------------------------------------------------------------

def parse_timestamp(value: Any, field: str) -> datetime:
    """An aware UTC datetime from ISO-8601 (naive = UTC, `Z`, any offset) or epoch s/ms (number or digits)."""
    if value is None:
        raise InvalidMessage("missing_field", f"{field}: null where a timestamp is required")
    if isinstance(value, str) and len(value) <= 40 and _EPOCH_TEXT.fullmatch(value):
        value = float(value) if "." in value else int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        moment = from_epoch(value, milliseconds=value > EPOCH_MILLISECONDS_ABOVE)
    elif isinstance(value, str) and len(value) <= 40:
        moment = from_iso(value, naive="utc")
    else:
        moment = None
    if moment is None:
        raise InvalidMessage("bad_timestamp", f"{field}: {shown(value)} is not a timestamp (ISO-8601 or epoch "
                                              "seconds/milliseconds within the calendar)")
    return moment


def latest_plausible(now: datetime, limits: Limits) -> datetime:
    return now + timedelta(seconds=limits.max_future_s)


def plausible_moment(value: Any, field: str, now: datetime, limits: Limits,
                     latest: datetime | None = None) -> datetime:
    """A timestamp between 2009 and `latest` (now + limits.max_future_s unless given)."""
    moment = parse_timestamp(value, field)
    latest = latest or latest_plausible(now, limits)
    if moment < EARLIEST_TIMESTAMP or moment > latest:
        raise InvalidMessage("out_of_range", f"{field}: {moment.isoformat()} is implausible (allowed "
                             f"{EARLIEST_TIMESTAMP.date()} .. now + {limits.max_future_s:g}s)")
    return moment


# --- numbers ----------------------------------------------------------------------------------

def parse_decimal(value: Any, field: str, *, nullable: bool = False, positive: bool = False,
                  non_negative: bool = False, magnitude: Magnitude | None = None) -> Decimal | None:
    """A finite Decimal from a string or JSON number (msd.values.parsing); None only when `nullable`.

    Every number must lie within the sane range of `magnitude` (or of the widest kind when not
    given); nonzero numbers must also be at least SMALLEST_NONZERO in size.
    """
    if value is None:
        if nullable:
            return None
        raise InvalidMessage("missing_field", f"{field}: null where a number is required")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise InvalidMessage("bad_decimal", f"{field}: {shown(value)} is not a number")
    if isinstance(value, str) and len(value) > 100:
        raise InvalidMessage("bad_decimal", f"{field}: {len(value)} characters is not a number an exchange sends")
    number = finite_decimal(value)
    if number is None:
        raise InvalidMessage("bad_decimal", f"{field}: {shown(value)} is not a finite number")
    _check_magnitude(number, value, field, magnitude or VOLUME)
    if positive and number <= 0:
        raise InvalidMessage("out_of_range", f"{field}: {shown(value)} must be > 0")
    if non_negative and number < 0:
        raise InvalidMessage("out_of_range", f"{field}: {shown(value)} must be >= 0")
    return number


def _check_magnitude(number: Decimal, value: Any, field: str, magnitude: Magnitude) -> None:
    size = abs(number)
    if size >= magnitude.limit:
        raise InvalidMessage("out_of_range", f"{field}: {shown(value)} is beyond any real {magnitude.kind} "
                                             f"(|x| < {magnitude.limit})")
    if size and size < SMALLEST_NONZERO:
        raise InvalidMessage("out_of_range", f"{field}: {shown(value)} is smaller than any real "
                                             f"{magnitude.kind} (nonzero |x| >= {SMALLEST_NONZERO})")
