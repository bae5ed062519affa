"""The strategies' assets and the open positions' assets, subscribed at ws-gateway (FR-026;
CONTRACTS §4.4).

At start, every asset of `signaller.strategies`; after a reload that adds assets, the new ones,
by the running consumer (it declares `signaller.strategies` as read live: msd.roles.consumer
.config). Every POSITION_ASSETS_EVERY_S the consumer also reads which assets have an open
position in the shared `positions` table and subscribes those too, so that the exits role gets
prices for a position no strategy trades (opened by hand, or by a strategy since removed)
instead of only the row's mark; a name that is not an asset symbol is skipped with a warning.
A failure is reported (the consumer's `ws-gateway` dependency) and tried again every
`consumer.subscriptions.retry_s`. An asset no longer wanted stays subscribed: ws-gateway's
subscriptions may serve other services, and its data is simply not used.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterable

from msd.bus.ws_gateway_api import SubscriptionFailed, subscribe_all
from msd.errors import DatabaseUnavailable, MsdError
from msd.store.db import Database
from msd.store.neighbours import read_open_position_assets
from msd.roles.runtime.process import DependencyHealth, RoleContext
from msd.values.parsing import InvalidValue, asset_symbol

log = logging.getLogger("msd.consumer")
IDLE_WAIT_S = 0.5        # how often an idle subscriber looks at the stop flag


POSITION_ASSETS_EVERY_S = 10.0


def strategy_assets(config: Any) -> set[str]:
    return {asset for strategy in config.signaller.strategies for asset in strategy.assets}


def checked_assets(names: Iterable[object], said: set[object]) -> set[str]:
    """The names that are asset symbols (msd.values.parsing.asset_symbol); each other one is
    warned about once (`said` remembers which)."""
    assets = set()
    for name in names:
        try:
            assets.add(asset_symbol("positions.asset", name))
        except InvalidValue as exc:
            if name not in said:
                said.add(name)
                log.warning("open position's asset not subscribed at ws-gateway: %s", exc)
    return assets


class PositionAssets:
    """The open positions' assets, read every POSITION_ASSETS_EVERY_S (msd.roles.consumer
    .subscriptions); a failed read keeps the last ones."""

    def __init__(self, db: Database):
        self.db, self.assets, self.said, self.next_read = db, set(), set(), 0.0

    def refresh(self) -> bool:
        """Read them again when due; True when they changed."""
        if time.monotonic() < self.next_read:
            return False
        self.next_read = time.monotonic() + POSITION_ASSETS_EVERY_S
        try:
            with self.db.autocommit() as conn:
                found = checked_assets(read_open_position_assets(conn), self.said)
        except (DatabaseUnavailable, MsdError) as exc:
            log.debug("open positions' assets not read: %s", exc)
            return False
        changed, self.assets = found != self.assets, found
        return changed


class Subscriber:
    """Runs on its own thread; `want` (from the consumer's loop) names the assets to have."""

    def __init__(self, ctx: RoleContext, deps: DependencyHealth):
        self.ctx, self.deps = ctx, deps
        self.settings = ctx.config.consumer.subscriptions
        self._lock = threading.Lock()
        self._wanted: set[str] = strategy_assets(ctx.config)
        self._changed = threading.Event()
        self.subscribed: set[str] = set()
        self.channels = 0

    def want(self, assets: Iterable[str]) -> None:
        with self._lock:
            self._wanted = set(assets)
        self._changed.set()

    def missing(self) -> set[str]:
        with self._lock:
            return self._wanted - self.subscribed

    def run(self) -> None:
        while not self.ctx.stopping.is_set():
            missing = self.missing()
            if not missing:
                self._changed.wait(IDLE_WAIT_S)
                self._changed.clear()
                continue
            if not self._subscribe(missing):
                self.ctx.stopping.wait(self.settings.retry_s)

    def _subscribe(self, assets: set[str]) -> bool:
        sub = self.settings
        try:
            done = subscribe_all(sub.url, sub.api_key, sub.requesting_service, assets)
        except SubscriptionFailed as exc:
            self.deps.failed("ws-gateway", f"{exc} (retried every {sub.retry_s:g}s)")
            return False
        self.deps.succeeded("ws-gateway")
        self.subscribed |= assets
        self.channels += len(done)
        self.ctx.set_status(subscriptions=self.channels)
        log.info("subscribed %d ws-gateway channels for %s", len(done), ", ".join(sorted(assets)))
        return True


def start_subscriber(ctx: RoleContext, deps: DependencyHealth) -> Subscriber | None:
    """The subscriber thread, when `consumer.subscriptions.url` is set."""
    if not ctx.config.consumer.subscriptions.url:
        return None
    subscriber = Subscriber(ctx, deps)
    threading.Thread(target=subscriber.run, name="subscriptions", daemon=True).start()
    return subscriber
