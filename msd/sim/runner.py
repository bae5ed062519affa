"""The paper exchange's main loop: market ticks out, signals in, fills and positions out.

Tick k happens at wall time t0 + k / tick_rate and moves sim time to start + k * speed /
tick_rate, so `speed` sim seconds pass per wall second and the market path depends only on the
seed. Between ticks the loop waits on the broker, handling signals as they arrive. When the
broker is lost, the market keeps moving and messages of that time are lost (as a real
ws-gateway's would be); the link reconnects with backoff. Fills are in the `orders` table
either way, which is what msd reconciles from.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from msd.bus.connection import reconnect_delay
from msd.bus.plain_link import PlainLink
from msd.bus.topology import QueueSpec
from msd.errors import BrokerUnavailable, DatabaseUnavailable
from msd.sim.exchange import ACK, DROP, POSITION_PATHS, PaperExchange, SimControls
from msd.sim.market import CATALOG, MarketGenerator, MarketParams
from msd.sim.order_manager import ORDER_EVENTS_QUEUE, SIGNALS_QUEUE, OrderManagerParams
from msd.sim.outbound import Outbound
from msd.sim.position_manager import POSITION_UPDATED_QUEUE
from msd.sim.ws_gateway import EVENT_TYPES, WsGatewayFormatter, queue_name
from msd.store.db import Database
from msd.store.neighbours import create_neighbour_tables

log = logging.getLogger("msd.sim")

# Longest single wait on the broker, so a stop request is noticed promptly.
POLL_S = 0.05


@dataclass(frozen=True)
class SimConfig:
    amqp_url: str
    dsn: str
    assets: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    seed: int = 1
    speed: float = 1.0                  # sim seconds per wall second
    tick_rate: float = 2.0              # ticks per wall second
    position_update_s: float = 5.0      # sim seconds between websocket position updates
    # Which position-manager path applies fills to the positions row (CONTRACTS §3.5):
    # "order_execution" (the fill path) or "websocket" (stale entry, closed_at never reset).
    position_path: str = "order_execution"
    start: datetime | None = None       # sim start (aware UTC); default: wall clock at start
    signals_queue: str = SIGNALS_QUEUE
    market: MarketParams = field(default_factory=MarketParams)
    orders: OrderManagerParams = field(default_factory=OrderManagerParams)

    def __post_init__(self) -> None:
        unknown = [asset for asset in self.assets if asset not in CATALOG]
        if not self.assets or unknown:
            raise ValueError(f"assets: {list(self.assets)!r} is invalid; expected some of {', '.join(CATALOG)}")
        for name in ("speed", "tick_rate", "position_update_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"{name}: {value!r} is invalid; expected a finite number > 0")
        if self.position_path not in POSITION_PATHS:
            raise ValueError(f"position_path: {self.position_path!r} is invalid; expected one of "
                             f"{', '.join(POSITION_PATHS)}")
        if self.start is not None and self.start.utcoffset() is None:
            raise ValueError(f"start: {self.start!r} is invalid; expected an aware datetime")


def queues(config: SimConfig) -> list[QueueSpec]:
    """Every queue the stand-ins touch, declared the way their real owners declare them."""
    specs = [QueueSpec(queue_name(kind), "ws_gateway") for kind in EVENT_TYPES]
    return specs + [QueueSpec(name, "durable")
                    for name in (config.signals_queue, ORDER_EVENTS_QUEUE, POSITION_UPDATED_QUEUE)]


class _Broker:
    """The link plus reconnect bookkeeping: `usable()` is False while waiting to reconnect."""

    def __init__(self, config: SimConfig, rng: random.Random):
        self._config, self._rng = config, rng
        self.link = PlainLink(config.amqp_url)
        self._up, self._failures, self._retry_at = False, 0, 0.0

    def usable(self) -> bool:
        if not self._up and time.monotonic() >= self._retry_at:
            try:
                self.link.open(queues(self._config), consume=self._config.signals_queue)
                self._up, self._failures = True, 0
                log.info("broker connected; consuming %s", self._config.signals_queue)
            except BrokerUnavailable as exc:
                self.lost(exc)
        return self._up

    def lost(self, exc: BrokerUnavailable) -> None:
        log.warning("broker unavailable: %s", exc)
        self.link.close()
        self._up = False
        self._retry_at = time.monotonic() + reconnect_delay(self._failures, rng=self._rng)
        self._failures += 1


def _publish(broker: _Broker, messages: list[Outbound]) -> None:
    if not messages or not broker.usable():
        return
    try:
        for message in messages:
            broker.link.publish(message.queue, message.body, persistent=message.persistent,
                                headers=message.headers, content_type=message.content_type,
                                timestamp=message.timestamp)
    except BrokerUnavailable as exc:
        broker.lost(exc)


def _serve_signals(broker: _Broker, exchange: PaperExchange, wait_s: float) -> None:
    """Handle the signals that arrive within `wait_s`; each is settled after its commit."""
    if not broker.usable():
        time.sleep(max(0.0, min(wait_s, POLL_S)))
        return
    try:
        for delivery in broker.link.receive(wait_s):
            try:
                verdict = exchange.handle_signal(delivery.body, delivery.headers)
            except DatabaseUnavailable as exc:
                log.warning("database unavailable, signal requeued: %s", exc)
                broker.link.reject(delivery.delivery_tag, requeue=True)
                continue
            _publish(broker, list(verdict.messages))
            if verdict.settle == ACK:
                broker.link.ack(delivery.delivery_tag)
            else:
                broker.link.reject(delivery.delivery_tag, requeue=verdict.settle != DROP)
    except BrokerUnavailable as exc:
        broker.lost(exc)


def run(config: SimConfig, stop: threading.Event, controls: SimControls | None = None) -> None:
    """Run the three stand-ins until `stop` is set; `controls` are levers for tests and demos."""
    rng = random.Random(config.seed)
    start = (config.start or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(tzinfo=None)
    # Separate generators: the market path must not depend on which signals arrived.
    market = MarketGenerator(config.market, tuple(CATALOG[a] for a in config.assets), start,
                             random.Random(rng.getrandbits(64)))
    gateway = WsGatewayFormatter(random.Random(rng.getrandbits(64)))
    db = Database(config.dsn, application_name="msd-sim")
    with db.transaction() as conn:
        create_neighbour_tables(conn)
    exchange = PaperExchange(db, {a: CATALOG[a] for a in config.assets}, config.orders,
                             random.Random(rng.getrandbits(64)), config.position_update_s,
                             position_path=config.position_path, controls=controls)
    log.info("msd-sim: %s regime, assets %s, speed %gx, %g ticks/s, sim start %sZ; resumed %d open orders",
             config.market.regime, ",".join(config.assets), config.speed, config.tick_rate,
             start.isoformat(), exchange.resume())
    broker = _Broker(config, random.Random(rng.getrandbits(64)))
    try:
        _loop(config, stop, market, gateway, exchange, broker, start)
    finally:
        broker.link.close()
        db.close()


def _loop(config: SimConfig, stop: threading.Event, market: MarketGenerator, gateway: WsGatewayFormatter,
          exchange: PaperExchange, broker: _Broker, start: datetime) -> None:
    sim_step = timedelta(seconds=config.speed / config.tick_rate)
    wall_start, tick = time.monotonic(), 0
    while not stop.is_set():
        tick += 1
        ticks = market.advance(start + tick * sim_step)
        _publish(broker, [message for asset_tick in ticks for message in gateway.messages(asset_tick)])
        try:
            _publish(broker, exchange.on_tick(ticks))
        except DatabaseUnavailable as exc:
            log.warning("database unavailable, fills wait for the next tick: %s", exc)
        deadline = wall_start + tick / config.tick_rate
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            _serve_signals(broker, exchange, max(0.0, min(remaining, POLL_S)))
            if remaining <= 0:
                break
