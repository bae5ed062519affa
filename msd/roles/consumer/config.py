"""The consumer's section of the config file, validated here, and what the consumer reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from msd.config import SectionContext
from msd.config.domain import Reads
from msd.config.reader import Section
from msd.errors import ConfigError

# The strategies' assets are subscribed at ws-gateway: applied live (new ones subscribed).
READS = Reads(frozenset({"database", "rabbitmq", "consumer", "supervisor", "signaller.strategies"}),
              live=frozenset({"signaller.strategies"}))
WS_GATEWAY_DECLARE = ("passive", "exact")
CONSUMER_QUEUE_KINDS = ("order_events", "position_updates", "ticker", "orderbook", "trade", "kline")
DEFAULT_QUEUES = {
    "order_events": "order-manager.order_events",
    "position_updates": "position-manager.position_updated",
    "ticker": "ws-gateway.ticker",
    "orderbook": "ws-gateway.orderbook",
    "trade": "ws-gateway.trade",
    "kline": "ws-gateway.kline",
}


@dataclass(frozen=True)
class SubscriptionsConfig:
    """Optional: ask ws-gateway's REST API to stream the strategies' assets (FR-026)."""
    url: str | None                 # e.g. http://ws-gateway:4400; None = do not subscribe
    requesting_service: str
    retry_s: float
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DeadLetterConfig:
    """Bounds on `msd.dead_letters`, so that a flood of junk cannot fill the disk."""
    retention_days: float           # rows older than this are deleted
    max_stored_per_source: int      # beyond this many stored rows of one source, only counted
    max_payload_bytes: int          # a stored body is cut to this many bytes (its full length is kept)


@dataclass(frozen=True)
class ConsumerConfig:
    queues: Mapping[str, str]       # kind -> queue name
    ws_gateway_declare: str
    prefetch: int
    batch_max: int
    batch_wait_ms: float
    subscriptions: SubscriptionsConfig
    max_body_bytes: int             # larger bodies are dead-lettered before they are parsed
    max_future_s: float             # timestamps further ahead of our clock are implausible
    dead_letters: DeadLetterConfig


def consumer_section(s: Section, context: SectionContext) -> ConsumerConfig:
    queues = {**DEFAULT_QUEUES, **s.string_map("queues", {})}
    unknown = sorted(set(queues) - set(CONSUMER_QUEUE_KINDS))
    if unknown:
        raise ConfigError(f"consumer.queues.{unknown[0]}", queues[unknown[0]],
                          "one of the kinds " + ", ".join(CONSUMER_QUEUE_KINDS))
    cfg = ConsumerConfig(
        queues=queues,
        ws_gateway_declare=s.choice("ws_gateway_declare", WS_GATEWAY_DECLARE, "passive"),
        prefetch=s.integer("prefetch", 500, lo=1, hi=65535),
        batch_max=s.integer("batch_max", 200, lo=1, hi=10000),
        batch_wait_ms=s.number("batch_wait_ms", 5.0, lo=0, hi=10000),
        subscriptions=_subscriptions(s.section("subscriptions"), context),
        max_body_bytes=s.integer("max_body_bytes", 1 << 20, lo=1024, hi=128 << 20),
        max_future_s=s.number("max_future_s", 300.0, lo=0, hi=86400),
        dead_letters=_dead_letters(s.section("dead_letters")),
    )
    s.reject_unknown()
    return cfg


def _subscriptions(s: Section, context: SectionContext) -> SubscriptionsConfig:
    url = s.optional_string("url")
    if url is not None and urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError("consumer.subscriptions.url", url, "an http(s) URL of ws-gateway, or null")
    cfg = SubscriptionsConfig(url=url, requesting_service=s.string("requesting_service", "model-service"),
                              retry_s=s.number("retry_s", 60.0, lo=1, hi=86400),
                              api_key=context.secret(s, "api_key"))
    if url is not None and not cfg.api_key:
        raise ConfigError("consumer.subscriptions.api_key_env", None,
                          "an environment variable (or api_key_key) holding ws-gateway's API key")
    s.reject_unknown()
    return cfg


def _dead_letters(s: Section) -> DeadLetterConfig:
    cfg = DeadLetterConfig(retention_days=s.number("retention_days", 7.0, lo=0.001, hi=3650),
                           max_stored_per_source=s.integer("max_stored_per_source", 10_000, lo=0, hi=10_000_000),
                           max_payload_bytes=s.integer("max_payload_bytes", 16_384, lo=256, hi=128 << 20))
    s.reject_unknown()
    return cfg
