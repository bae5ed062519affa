"""The test-side checker itself must accept and refuse the CONTRACTS.md §1.5 examples correctly."""
import json

import pytest

from tests.contract.order_manager_rules import problems

MODEL_BUY = {"signal_id": "b028389f-2f98-489a-a4a7-a9c20e69f568", "signal_type": "buy", "asset": "BTCUSDT",
             "amount": 100.0, "confidence": 0.7, "timestamp": "2025-11-20T10:15:29.500000Z",
             "strategy_id": "momentum_v1", "model_version": "v1763633400", "is_warmup": False,
             "market_data_snapshot": {"price": 95000.5, "spread": 0.1, "volume_24h": 12.5, "volatility": 0.0012,
                                      "orderbook_depth": {"bid_depth": 3.21, "ask_depth": 2.87},
                                      "technical_indicators": None},
             "metadata": {"reasoning": "Model prediction: 1"}, "trace_id": "9d1f6a52-7a55-4a8e-8d9b-0f2b7d1e3c44"}
MINIMAL = json.loads('{"signal_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "signal_type": "BUY", "asset": "btcusdt",'
                     ' "amount": "25", "confidence": "0.85", "timestamp": "2025-11-20T10:15:29Z", "strategy_id": "s1",'
                     ' "market_data_snapshot": {"price": 95000}}')


def test_examples_accepted():
    assert problems(MODEL_BUY) == []
    assert problems(MINIMAL) == []


@pytest.mark.parametrize("change", [
    {"signal_id": "nope"}, {"signal_type": "hold"}, {"asset": "BTC-USDT"}, {"amount": 0.001},
    {"amount": float("nan")}, {"confidence": 1.5}, {"timestamp": "2025-11-20T10:15:29+00:00Z"},
    {"strategy_id": ""}, {"market_data_snapshot": {"price": 0}}, {"metadata": [1]}, {"trace_id": "x" * 101},
])
def test_variants_refused(change):
    assert problems({**MODEL_BUY, **change})
