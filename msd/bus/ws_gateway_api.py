"""ws-gateway's subscription REST API (CONTRACTS.md §4.4): ask it to stream channels for assets.

`POST /api/v1/subscriptions` is idempotent per requesting service and topic (200 either way),
so msd simply subscribes everything it needs at start and again after a failure.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Iterable

from msd.errors import MsdError

# REST channel names; ws-gateway publishes `trades` to the queue ws-gateway.trade (§4.1).
CHANNELS = ("ticker", "orderbook", "trades", "kline")


class SubscriptionFailed(MsdError):
    """ws-gateway refused or could not be reached; the message names the channel and asset."""


@dataclass(frozen=True)
class Subscription:
    channel_type: str
    symbol: str
    topic: str


def subscribe(base_url: str, api_key: str, requesting_service: str, channel_type: str, symbol: str,
              timeout_s: float = 5.0) -> Subscription:
    body = json.dumps({"channel_type": channel_type, "symbol": symbol,
                       "requesting_service": requesting_service}).encode()
    request = urllib.request.Request(f"{base_url.rstrip('/')}/api/v1/subscriptions", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "X-API-Key": api_key})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            reply = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        raise SubscriptionFailed(f"{channel_type} {symbol}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise SubscriptionFailed(f"{channel_type} {symbol}: {exc}") from None
    return Subscription(reply.get("channel_type", channel_type), reply.get("symbol", symbol), reply.get("topic", ""))


def subscribe_all(base_url: str, api_key: str, requesting_service: str, assets: Iterable[str],
                  channels: Iterable[str] = CHANNELS) -> list[Subscription]:
    """Subscribe every channel for every asset; raises on the first failure (retry is the caller's)."""
    return [subscribe(base_url, api_key, requesting_service, channel, asset)
            for asset in sorted(set(assets)) for channel in channels]
