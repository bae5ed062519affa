"""ws-gateway stand-in: market ticks as the exact ws-gateway messages (CONTRACTS.md §4).

Pure: `WsGatewayFormatter.messages(tick)` turns one `AssetTick` into the `Outbound` messages of
`ws-gateway.{ticker,orderbook,trade,kline}`. It keeps what it last sent per asset, because
the wire is stateful: the first ticker is a snapshot and later ones are deltas carrying only
the changed keys (and no `type`), the level-1 book sends deltas with `type` and re-sends a
snapshot after 3 s without change (as Bybit does), and unchanged forming bars are not repeated.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Mapping

from msd.sim.market import AssetTick, GeneratedBar, Quote, TradePrint
from msd.sim.outbound import Outbound, epoch_ms, json_body, naive_iso, new_uuid

QUEUE_PREFIX = "ws-gateway."
EVENT_TYPES = ("ticker", "orderbook", "trade", "kline")
BOOK_RESNAPSHOT_AFTER = timedelta(seconds=3)
FUNDING_INTERVAL_HOURS = 8
FUNDING_RATE = "0.0001"
# Open interest is not modelled; a steady figure of this many days of volume looks plausible.
OPEN_INTEREST_DAYS = Decimal("0.4")


def queue_name(event_type: str) -> str:
    return QUEUE_PREFIX + event_type


@dataclass
class _Sent:
    """What was last published for one asset."""
    ticker: dict[str, str] | None = None
    book: Quote | None = None
    book_at: datetime | None = None
    update_id: int = 0
    forming: GeneratedBar | None = None


@dataclass
class WsGatewayFormatter:
    rng: random.Random
    _sent: dict[str, _Sent] = field(default_factory=dict)
    _seq: int = 223344556677

    def messages(self, tick: AssetTick) -> list[Outbound]:
        """The messages one tick of one asset produces, in the order ws-gateway would send them."""
        sent = self._sent.setdefault(tick.symbol, _Sent())
        out = [self._ticker(tick, sent)] if self._ticker_changed(tick, sent) else []
        book = self._orderbook(tick, sent)
        out += [book] if book is not None else []
        out += self._trades(tick)
        out += self._klines(tick, sent)
        return out

    # -- envelope --------------------------------------------------------------------------------

    def _envelope(self, event_type: str, topic: str, at: datetime, payload: Mapping[str, Any],
                  trace_id: str) -> Outbound:
        at_ms = at.replace(microsecond=at.microsecond // 1000 * 1000)
        received = at + timedelta(microseconds=self.rng.randint(800, 20000))
        body = {"event_id": new_uuid(self.rng), "event_type": event_type, "topic": topic,
                "timestamp": naive_iso(at_ms), "received_at": naive_iso(received),
                "payload": dict(payload), "trace_id": trace_id}
        return Outbound(queue=queue_name(event_type), body=json_body(body), persistent=True,
                        headers={"event_type": event_type, "topic": topic, "trace_id": trace_id},
                        timestamp=epoch_ms(at) // 1000, payload=body)

    # -- ticker ----------------------------------------------------------------------------------

    def _ticker_fields(self, tick: AssetTick) -> dict[str, str]:
        stats, quote = tick.stats, tick.quote
        mark = quote.mid.quantize(quote.bid)
        change = (tick.last_price - stats.prev_price_24h) / stats.prev_price_24h
        open_interest = (stats.volume_24h * OPEN_INTEREST_DAYS).quantize(Decimal("0.001"))
        return {
            "symbol": tick.symbol, "tickDirection": tick.last_tick_direction,
            "price24hPcnt": str(change.quantize(Decimal("0.000001"))), "lastPrice": str(tick.last_price),
            "prevPrice24h": str(stats.prev_price_24h), "highPrice24h": str(stats.high_24h),
            "lowPrice24h": str(stats.low_24h), "prevPrice1h": str(stats.prev_price_1h),
            "markPrice": str(mark), "indexPrice": str(mark),
            "openInterest": str(open_interest),
            "openInterestValue": str((open_interest * mark).quantize(Decimal("0.01"))),
            "turnover24h": str(stats.turnover_24h), "volume24h": str(stats.volume_24h),
            "nextFundingTime": str(_next_funding_ms(tick.at)), "fundingRate": FUNDING_RATE,
            "bid1Price": str(quote.bid), "bid1Size": str(quote.bid_size),
            "ask1Price": str(quote.ask), "ask1Size": str(quote.ask_size),
        }

    def _ticker_changed(self, tick: AssetTick, sent: _Sent) -> bool:
        return sent.ticker != self._ticker_fields(tick)

    def _ticker(self, tick: AssetTick, sent: _Sent) -> Outbound:
        fields = self._ticker_fields(tick)
        if sent.ticker is None:
            payload = dict(fields)
        else:
            # Bybit deltas always name the symbol; everything else only when it changed.
            payload = {"symbol": tick.symbol}
            payload.update({k: v for k, v in fields.items() if sent.ticker.get(k) != v})
        sent.ticker = fields
        topic = f"tickers.{tick.symbol}"
        payload["topic"] = topic
        return self._envelope("ticker", topic, tick.at, payload, new_uuid(self.rng))

    # -- level-1 order book ------------------------------------------------------------------------

    def _orderbook(self, tick: AssetTick, sent: _Sent) -> Outbound | None:
        quote, previous = tick.quote, sent.book
        if previous is None or (previous == quote and tick.at - sent.book_at >= BOOK_RESNAPSHOT_AFTER):
            kind, bids, asks = "snapshot", _level(quote.bid, quote.bid_size), _level(quote.ask, quote.ask_size)
        elif previous == quote:
            return None
        else:
            kind = "delta"
            bids = _changed_side(previous.bid, previous.bid_size, quote.bid, quote.bid_size)
            asks = _changed_side(previous.ask, previous.ask_size, quote.ask, quote.ask_size)
        sent.book, sent.book_at, sent.update_id = quote, tick.at, sent.update_id + 1
        self._seq += 1
        topic = f"orderbook.1.{tick.symbol}"
        payload = {"s": tick.symbol, "b": bids, "a": asks, "u": sent.update_id, "seq": self._seq,
                   "topic": topic, "type": kind}
        return self._envelope("orderbook", topic, tick.at, payload, new_uuid(self.rng))

    # -- trades and klines -----------------------------------------------------------------------

    def _trades(self, tick: AssetTick) -> list[Outbound]:
        if not tick.trades:
            return []
        topic = f"publicTrade.{tick.symbol}"
        # One Bybit message carries all prints since the last one: one trace id, one envelope time.
        trace_id, at = new_uuid(self.rng), tick.trades[-1].at
        return [self._envelope("trade", topic, at, _trade_payload(trade, tick.symbol, topic), trace_id)
                for trade in tick.trades]

    def _klines(self, tick: AssetTick, sent: _Sent) -> list[Outbound]:
        topic = f"kline.1.{tick.symbol}"
        bars = list(tick.closed_bars)
        if tick.forming_bar != sent.forming:
            bars.append(tick.forming_bar)
            sent.forming = tick.forming_bar
        return [self._envelope("kline", topic, tick.at, _kline_payload(bar, tick.at, topic),
                               new_uuid(self.rng)) for bar in bars]


def _level(price: Decimal, size: Decimal) -> list[list[str]]:
    return [[str(price), str(size)]]


def _changed_side(old_price: Decimal, old_size: Decimal, price: Decimal, size: Decimal) -> list[list[str]]:
    """A level-1 delta side: the new best level, and the old one deleted (size "0") if it moved."""
    if old_price == price:
        return [] if old_size == size else _level(price, size)
    return [[str(price), str(size)], [str(old_price), "0"]]


def _trade_payload(trade: TradePrint, symbol: str, topic: str) -> dict[str, Any]:
    return {"T": epoch_ms(trade.at), "s": symbol, "S": trade.side, "v": str(trade.quantity),
            "p": str(trade.price), "L": trade.tick_direction, "i": trade.trade_id, "BT": False,
            "topic": topic}


def _kline_payload(bar: GeneratedBar, at: datetime, topic: str) -> dict[str, Any]:
    start = epoch_ms(bar.start)
    return {"start": start, "end": start + 59999, "interval": "1", "open": str(bar.open),
            "close": str(bar.close), "high": str(bar.high), "low": str(bar.low),
            "volume": str(bar.volume), "turnover": str(bar.turnover), "confirm": bar.confirmed,
            "timestamp": epoch_ms(at), "topic": topic}


def _next_funding_ms(at: datetime) -> int:
    hours = FUNDING_INTERVAL_HOURS
    boundary = at.replace(minute=0, second=0, microsecond=0, hour=at.hour // hours * hours)
    return epoch_ms(boundary + timedelta(hours=hours))
