"""Example payloads copied verbatim from CONTRACTS.md (shared by codec, store and daemon tests)."""
import json

ABSENT = object()


def with_value(example: str | bytes, path: tuple, value) -> dict:
    """The decoded example with the value at `path` replaced (or removed when `value` is ABSENT)."""
    document = json.loads(example)
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if value is ABSENT:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return document

FILLED_EVENT = b'''{"event_id": "2c5152f3-c55f-4c22-97be-7eea47f2a538", "event_type": "filled", "timestamp": "2025-11-20T10:15:31.422890",
 "trace_id": "a1b2c3", "order": {"id": "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", "order_id": "1c9a7e52-7c1b-4f0e-9d2a-3b4c5d6e7f80",
 "signal_id": "b028389f-2f98-489a-a4a7-a9c20e69f568", "asset": "BTCUSDT", "side": "Buy", "order_type": "Market",
 "quantity": "0.00100000", "price": null, "status": "filled", "filled_quantity": "0.00100000", "average_price": "95012.30000000",
 "fees": "0.05225677", "created_at": "2025-11-20T10:15:30.123456", "updated_at": "2025-11-20T10:15:31.002345",
 "executed_at": "2025-11-20T10:15:31.001000", "is_dry_run": false},
 "execution_details": {"execution_latency_seconds": 0.877544, "fill_percentage": 100.0, "remaining_quantity": "0E-8"},
 "market_conditions": {"price": 95012.3, "timestamp": "2025-11-20T10:15:31.001000"}}'''

REJECTED_EVENT = b'''{"event_id": "461bedba-0c73-4533-ad7a-595be5e16b51", "event_type": "rejected", "timestamp": "2025-11-20T10:15:31.423038",
 "trace_id": "a1b2c3", "order": {"id": "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", "order_id": "REJECTED-b028389f-2f98-489a-a4a7-a9c20e69f568",
 "signal_id": "b028389f-2f98-489a-a4a7-a9c20e69f568", "asset": "BTCUSDT", "side": "SELL", "order_type": "Market",
 "quantity": "0.00105200", "price": null, "status": "rejected", "filled_quantity": "0E-8", "average_price": null, "fees": null,
 "created_at": "2025-11-20T10:15:30.123456", "updated_at": "2025-11-20T10:15:31.002345", "executed_at": null, "is_dry_run": false},
 "execution_details": {"execution_latency_seconds": null, "fill_percentage": 0.0, "remaining_quantity": "0.00105200"},
 "rejection_reason": "Risk limit exceeded: Position size would exceed limit",
 "market_conditions": {"price": 95000.5, "spread": 0.01, "volume_24h": 123.0, "volatility": null, "timestamp": "2025-11-20T10:15:29.500000+00:00"},
 "signal": {"signal_id": "b028389f-2f98-489a-a4a7-a9c20e69f568", "signal_type": "sell", "asset": "BTCUSDT", "amount": 100.0,
 "confidence": 0.7, "strategy_id": "momentum_v1", "model_version": null, "is_warmup": false}}'''

PARTIALLY_FILLED_EVENT = b'''{"event_id": "353bc7fb-1182-4250-9fcf-aea646907038", "event_type": "partially_filled", "timestamp": "2025-11-20T10:15:32.000100",
 "trace_id": "t-77", "order": {"id": "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", "order_id": "1c9a7e52-7c1b-4f0e-9d2a-3b4c5d6e7f80",
 "signal_id": "b028389f-2f98-489a-a4a7-a9c20e69f568", "asset": "BTCUSDT", "side": "Buy", "order_type": "Limit",
 "quantity": "0.01000000", "price": "94900.00000000", "status": "partially_filled", "filled_quantity": "0.00400000",
 "average_price": "94900.00000000", "fees": null, "created_at": "2025-11-20T10:15:30.123456", "updated_at": "2025-11-20T10:15:31.002345",
 "executed_at": null, "is_dry_run": false},
 "execution_details": {"execution_latency_seconds": null, "fill_percentage": 40.0, "remaining_quantity": "0.00600000"},
 "market_conditions": {"price": 94900.0, "timestamp": "2025-11-20T10:15:31.001000"}}'''

CANCELLED_EVENT = b'''{"event_id": "16a0acbe-8732-4c88-b7bd-ce3fde7ee580", "event_type": "cancelled", "timestamp": "2025-11-20T11:00:30.260000",
 "trace_id": "c0ffee", "order": {"id": "0a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d", "order_id": "5f0d3c2b-1a09-4e8f-b7d6-c5b4a3928170",
 "signal_id": "7e1d2c3b-4a59-4687-9a0b-c1d2e3f4a5b6", "asset": "ETHUSDT", "side": "Buy", "order_type": "Limit",
 "quantity": "0.05000000", "price": "3050.00000000", "status": "cancelled", "filled_quantity": "0.02000000",
 "average_price": "3050.00000000", "fees": "0.01098000", "created_at": "2025-11-20T11:00:00.005000",
 "updated_at": "2025-11-20T11:00:30.250000", "executed_at": null, "is_dry_run": false},
 "execution_details": {"execution_latency_seconds": null, "fill_percentage": 40.0, "remaining_quantity": "0.03000000"},
 "modification": {"before": {"status": "partially_filled", "filled_quantity": "0.02000000", "average_price": "3050.00000000"},
                  "after": {"status": "cancelled", "filled_quantity": "0.02000000", "average_price": "3050.00000000"}}}'''

POSITION_OPENED = b'''{"event_type": "position_updated", "position_id": "3d6f0a51-2b7e-4d8c-9a1f-0e2d3c4b5a69", "asset": "BTCUSDT", "size": "0.00100000",
 "unrealized_pnl": "0E-8", "realized_pnl": "0E-8", "mode": "one-way", "unrealized_pnl_pct": "0E+8", "time_held_minutes": 0,
 "position_size_norm": null, "update_source": "order_execution", "trace_id": null, "timestamp": "2025-11-20T10:15:31.812345+00:00"}'''

POSITION_SHORT = b'''{"event_type": "position_updated", "position_id": "3d6f0a51-2b7e-4d8c-9a1f-0e2d3c4b5a69", "asset": "BTCUSDT", "size": "-0.00300000",
 "unrealized_pnl": "1.50007037", "realized_pnl": "-0.41200000", "mode": "one-way", "unrealized_pnl_pct": "0.5319391488848105256103006884",
 "time_held_minutes": 104, "position_size_norm": null, "update_source": "websocket", "trace_id": "trace-xyz",
 "timestamp": "2025-11-20T12:00:00.104000+00:00"}'''

TICKER_EVENT = b'''{"event_id": "5b2f8a0e-6c1d-4e7b-9f3a-2d4c6e8a0b1c", "event_type": "ticker", "topic": "tickers.BTCUSDT",
 "timestamp": "2025-11-20T10:15:31.123000", "received_at": "2025-11-20T10:15:31.140512",
 "payload": {"symbol": "BTCUSDT", "tickDirection": "PlusTick", "price24hPcnt": "0.012345", "lastPrice": "95010.20",
  "prevPrice24h": "93851.50", "highPrice24h": "95500.00", "lowPrice24h": "93500.10", "prevPrice1h": "94980.00",
  "markPrice": "95009.87", "indexPrice": "95012.44", "openInterest": "51234.567", "openInterestValue": "4867654321.12",
  "turnover24h": "12345678901.2345", "volume24h": "130012.345", "nextFundingTime": "1732118400000", "fundingRate": "0.0001",
  "bid1Price": "95010.10", "bid1Size": "1.234", "ask1Price": "95010.20", "ask1Size": "0.567", "topic": "tickers.BTCUSDT"},
 "trace_id": "e3b0c442-98fc-4c14-9afb-f4c8996fb924"}'''

ORDERBOOK_EVENT = b'''{"event_id": "a7d1c3e5-0f2b-4d6a-8c9e-1b3d5f7a9c2e", "event_type": "orderbook", "topic": "orderbook.1.BTCUSDT",
 "timestamp": "2025-11-20T10:15:31.125000", "received_at": "2025-11-20T10:15:31.131002",
 "payload": {"s": "BTCUSDT", "b": [["95010.10", "1.234"]], "a": [["95010.20", "0.567"]], "u": 8123456, "seq": 223344556677,
  "topic": "orderbook.1.BTCUSDT", "type": "snapshot"}, "trace_id": "0c9a1f5e-2b7d-4e3a-9c8b-7d6e5f4a3b2c"}'''

TRADE_EVENT = b'''{"event_id": "c1e2d3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f", "event_type": "trade", "topic": "publicTrade.BTCUSDT",
 "timestamp": "2025-11-20T10:15:31.130000", "received_at": "2025-11-20T10:15:31.133871",
 "payload": {"T": 1732097731128, "s": "BTCUSDT", "S": "Sell", "v": "0.015", "p": "95010.10", "L": "MinusTick",
  "i": "e7a5b2c4-1d3f-5a6b-8c9d-0e1f2a3b4c5d", "BT": false, "topic": "publicTrade.BTCUSDT"},
 "trace_id": "4f3e2d1c-0b9a-4876-9543-210fedcba987"}'''

KLINE_EVENT = b'''{"event_id": "d4c3b2a1-9f8e-4d7c-b6a5-43210fedcba9", "event_type": "kline", "topic": "kline.1.BTCUSDT",
 "timestamp": "2025-11-20T10:15:31", "received_at": "2025-11-20T10:15:31.004221",
 "payload": {"start": 1732097700000, "end": 1732097759999, "interval": "1", "open": "94998.00", "close": "95010.20",
  "high": "95020.00", "low": "94990.50", "volume": "12.345", "turnover": "1172839.12", "confirm": false,
  "timestamp": 1732097731000, "topic": "kline.1.BTCUSDT"}, "trace_id": "8a7b6c5d-4e3f-4a1b-9c0d-e1f2a3b4c5d6"}'''

ORDER_EVENTS = (PARTIALLY_FILLED_EVENT, FILLED_EVENT, REJECTED_EVENT, CANCELLED_EVENT)
POSITION_UPDATES = (POSITION_OPENED, POSITION_SHORT)
MARKET_EVENTS = {"ticker": TICKER_EVENT, "orderbook": ORDERBOOK_EVENT, "trade": TRADE_EVENT, "kline": KLINE_EVENT}
