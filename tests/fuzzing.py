"""Hypothesis strategies for hostile inbound messages, built from the CONTRACTS.md examples.

Shared by the property test (tests/unit/test_codec_fuzz.py: a few thousand cases, fixed seed)
and benchmarks/fuzz.py (100,000 cases with a report). A case starts from a real example and
applies a few mutations: a value replaced by something hostile (lone surrogates, NUL, huge or
tiny numbers, NaN, wrong types, deep nesting), a key removed or added; the document is then
encoded as UTF-8 (or not), and sometimes the bytes themselves are damaged. `check_accepted`
states what anything the codecs accept must satisfy.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

from hypothesis import strategies as st

from msd.bus.codecs import PARSERS
from msd.values.messages import BookTop, Kline, OrderEvent, OrderSnapshot, PositionUpdate, TickerUpdate, Trade
from msd.bus.checks import EARLIEST_TIMESTAMP, REASONS, SMALLEST_NONZERO, VOLUME
from tests import examples

NOW = datetime(2025, 11, 20, 12, 0, tzinfo=timezone.utc)
# (codec kind, example name, example body) for every inbound example of CONTRACTS.md §2-§4.
CASES = ([("order_event", f"order_event_{i}", body) for i, body in enumerate(examples.ORDER_EVENTS)]
         + [("position_update", f"position_update_{i}", body) for i, body in enumerate(examples.POSITION_UPDATES)]
         + [("market", name, body) for name, body in examples.MARKET_EVENTS.items()])
EXPECTED_TYPE = {"order_event": OrderEvent, "position_update": PositionUpdate,
                 "market": (TickerUpdate, BookTop, Trade, Kline)}

_any_char = st.characters(exclude_categories=())          # surrogates and NUL included
_hostile_text = st.one_of(
    st.text(_any_char, max_size=12),
    st.sampled_from(["\ud800", "\udfff", "a\x00b", "\ufeff", "", " buy", "BTCUSDT\x00", "0E+8", "0E-8",
                     "NaN", "-Infinity", "1e400", "-1e10", "-1e30", "1e-400", "9" * 400, "2099-01-01T00:00:00",
                     "2025-11-20T10:15:31+00:00Z", "1732097731128", "-0.00000001"]),
    st.text(st.sampled_from("0123456789.eE+-"), min_size=1, max_size=30),
)
_hostile_number = st.one_of(
    st.integers(), st.integers(min_value=-(10 ** 450), max_value=10 ** 450),
    st.floats(allow_nan=True, allow_infinity=True),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-999, 999), st.integers(-500, 500)),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)
_scalar = st.one_of(_hostile_text, _hostile_number, st.booleans(), st.none())
hostile_value = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(_any_char, max_size=6), inner, max_size=4)), max_leaves=8)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path inside a decoded document, containers included."""
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        found.append(prefix + (key,))
        found.extend(_paths(child, prefix + (key,)))
    return found


def _parent(document: Any, path: tuple) -> Any:
    for key in path[:-1]:
        document = document[key]
    return document


@st.composite
def mutated_document(draw, example: bytes) -> Any:
    document = json.loads(example)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(document)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(document, path)
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(hostile_value)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(_any_char, max_size=8))] = draw(hostile_value)
    return document


def _encode(document: Any, how: str) -> bytes:
    if how == "ascii":       # json.dumps' default: non-ASCII and surrogates as \\u escapes
        return json.dumps(document).encode("ascii")
    text = json.dumps(document, ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass") if how == "utf-8" else text.encode(how, "surrogatepass")


@st.composite
def hostile_body(draw, example: bytes) -> bytes:
    if draw(st.integers(0, 9)) == 0:          # an untouched example now and then: must still parse
        return example
    body = _encode(draw(mutated_document(example)),
                   draw(st.sampled_from(["ascii", "ascii", "utf-8", "utf-16", "utf-32"])))
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "flip", "insert"]))
    if damage == "truncate" and body:
        body = body[:draw(st.integers(0, len(body) - 1))]
    elif damage == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1:]
    elif damage == "insert":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(min_size=1, max_size=8)) + body[at:]
    return body


hostile_headers = st.one_of(
    st.none(), st.just({}),
    st.dictionaries(st.sampled_from(["trace_id", "event_type", "x"]),
                    st.one_of(st.text(_any_char, max_size=12), st.binary(max_size=12), st.integers(), st.none()),
                    max_size=3))


def parse_case(kind: str, body: bytes, headers: Any) -> Any:
    """What the consumer does with one delivery: a typed message, or InvalidMessage raised."""
    return PARSERS[kind](body, headers, now=NOW)


def check_accepted(kind: str, message: Any) -> None:
    """What must hold for anything a codec accepted (raises AssertionError otherwise)."""
    assert isinstance(message, EXPECTED_TYPE[kind]), type(message)
    for value in _leaves(message):
        if isinstance(value, str):
            assert "\x00" not in value
            value.encode("utf-8")                        # no lone surrogate survives
        elif isinstance(value, Decimal):
            assert value.is_finite() and abs(value) < VOLUME.limit
            assert value == 0 or abs(value) >= SMALLEST_NONZERO
        elif isinstance(value, datetime):
            assert value.tzinfo is not None and EARLIEST_TIMESTAMP <= value <= NOW + timedelta(seconds=300)
        elif isinstance(value, float):
            assert math.isfinite(value)
    if isinstance(message, OrderEvent):
        json.dumps(message.raw, allow_nan=False).encode("utf-8")   # what goes into jsonb


def _leaves(node: Any):
    if isinstance(node, (OrderEvent, OrderSnapshot, PositionUpdate, TickerUpdate, BookTop, Trade, Kline)):
        for name in node.__dataclass_fields__:
            if name != "raw":
                yield from _leaves(getattr(node, name))
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _leaves(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _leaves(value)
    else:
        yield node


def reason_is_known(reason: str) -> bool:
    return reason in REASONS


Check = Callable[[str, Any], None]
