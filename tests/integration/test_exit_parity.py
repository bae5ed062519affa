"""Exit parity (issue 12): one position and price history through the daemon's exits role (in
process, real database and broker, its clock injected as the ticks' time) and through the
backtest's exits (msd.backtest.exiting, each tick a path point) gives the same exits: reason,
quantity, price level and trigger price, decided at the same moment, in the same order.

Both call msd.strategies.exit_step, paced alike: the debounce (exit_step.debouncer) and the
per-asset token bucket (taken by the step), from one config. Each exit fills at once in both
(msd.exchange.positions apply_fill, the backtest's position-manager arithmetic); the daemon's
`positions` row is written with what that fill gives (its mark the market's last price, as
position-manager's) and a position update announces it, as position-manager does. The daemon
takes a turn whenever its debouncer has an evaluation due (its real loop turns every few
milliseconds), at each tick, and runs its verification pass every 5 s from `start` (the
backtest's passes are on the same grid). Four positions: a long that takes a ladder step and then trails; a
long whose ladder step moves the stop to breakeven, which fires; a short stopped out; a long
whose second ladder step is reached within the cooldown of its first and goes out at the next
tick after it. Unpaced (no debounce, a rate that never binds) and paced (a debounce longer than
the ticks' spacing, so every other tick is coalesced, and one exit per 2 s per asset, which
holds one exit until the verification pass after its token is back).
"""
import multiprocessing
import queue
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest
import yaml

from msd.backtest.exiting import AssetExits
from msd.backtest.fills import PathPoint
from msd.bus.publisher import ConfirmingPublisher
from msd.config import load_config
from msd.exchange.positions import PositionState, apply_fill
from msd.roles.exits.main import ExitRole
from msd.roles.runtime.outbox import Outbox
from msd.roles.runtime.process import RoleContext
from msd.rules import ORDER_MANAGER_DEFAULTS
from msd.strategies.exit_step import VERIFY_EVERY_S, debouncer
from msd.store.db import Database
from msd.supervisor.spawn import ChildSpec
from msd.values.messages import PositionUpdate, Trade
from tests.backtest_helpers import walk_exits
from tests.fixtures.rabbit import amqp_url
from tests.integration.exit_helpers import execute
from tests.integration.test_exit_role import backend  # noqa: F401  (the module-scoped fixture)

pytestmark = pytest.mark.integration

RULES = {"stop_loss_pct": 2, "cooldown_seconds": 1, "trailing": {"activation_pct": 1.5, "distance_pct": 0.5},
         "take_profit": {"steps": [{"at_pct": 1, "close": 0.5}, {"at_pct": 3, "close": 1.0}],
                         "breakeven_after_first_step": True}}
# asset -> (opening fill side, size, entry, ticks: one every half second)
HISTORIES = {
    "LADUSDT": ("Buy", "2", "100", ["100.2", "100.6", "101.1", "101.4", "102.0", "102.2", "101.9", "101.6", "101"]),
    "BEVUSDT": ("Buy", "3", "100", ["100.5", "101.0", "100.6", "100.3", "100.09", "99"]),
    "SHOUSDT": ("SELL", "2", "100", ["100.8", "99.7", "101.5", "102.1", "103"]),
    "CDNUSDT": ("Buy", "2", "100", ["100.5", "101.2", "103.1", "103.2"]),
}
TICK = timedelta(seconds=0.5)
VERIFY = timedelta(seconds=VERIFY_EVERY_S)
END = timedelta(seconds=10)                         # both run until then: two verification passes
PACINGS = {
    "unpaced": {"debounce_s": 0, "debounce_max_delay_s": 0, "asset_rate": {"rate_per_s": 100, "burst": 100}},
    "paced": {"debounce_s": 0.6, "debounce_max_delay_s": 0.9, "asset_rate": {"rate_per_s": 0.5, "burst": 1}},
}


def opening(asset: str, start: datetime) -> PositionState:
    side, size, entry, _ = HISTORIES[asset]
    return apply_fill(None, asset, side, D(size), D(entry), D(0), start)


def closing_side(position: PositionState) -> str:
    return "SELL" if position.size > 0 else "Buy"


def said(after: timedelta, asset: str, reason: str, quantity, level, trigger) -> tuple:
    return (after.total_seconds(), asset, reason, D(str(quantity)), None if level is None else D(str(level)),
            D(str(trigger)))


def write_config(tmp_path, dsn: str, vhost: str, pacing: str):
    config = {"database": {"dsn": dsn}, "rabbitmq": {"url": amqp_url(vhost).replace("guest:guest@", "guest@")},
              "exits": {"fallback_after_s": 3600, "rules": RULES, **PACINGS[pacing]}}
    path = tmp_path / f"msd-{pacing}.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path, env={})


# --- the backtest's exits -------------------------------------------------------------------------

def backtest_exits(asset: str, start: datetime, config) -> list[tuple]:
    ids, exits = iter(range(10_000)), config.exits
    walker = AssetExits(asset, exits.rules_for(asset), ORDER_MANAGER_DEFAULTS, debouncer(exits), exits.asset_rate,
                        lambda: f"b{next(ids)}", started_at=start)
    points = tuple(PathPoint("tick", D(p), start + (i + 1) * TICK) for i, p in enumerate(HISTORIES[asset][3]))
    return [said(fired.at - start, asset, fired.decision.reason.value, fired.decision.quantity,
                 fired.decision.rule_params.get("threshold_price"), fired.decision.trigger_price)
            for fired in walk_exits(walker, opening(asset, start), [points], D(0), until=start + END)]


# --- the daemon's exits role ----------------------------------------------------------------------

class Daemon:
    """The exits role turn by turn, its clock the history's time (the step reads no other)."""

    def __init__(self, dsn: str, vhost: str, config, start: datetime):
        self.dsn, self.now = dsn, start
        self.queues = {"positions": queue.Queue(), "exit_prices": queue.Queue()}
        ctx = RoleContext(ChildSpec("exits", "msd.roles.exits.main", config, multiprocessing.Pipe()[0], self.queues))
        self.db = Database(dsn)
        self.publisher = ConfirmingPublisher(amqp_url(vhost), connection_name="test-exit-parity")
        self.role = ExitRole(ctx, self.db, Outbox(self.db, self.publisher, "model-service.trading_signals", ("exit",)),
                             clock=lambda: self.now)
        self.seen: set[str] = set()

    def turn(self, verify: bool = False) -> None:
        # The verification passes run on the injected clock's 5-second grid (`verify`), not on
        # the test's real time, which the role's monotonic clock reads.
        if verify:
            self.role.next_verify = 0.0
        self.role.step()
        self.role.save(now=True)
        self.role.next_verify = float("inf")

    def write_row(self, position_id: str | None, position: PositionState) -> str:
        naive = position.last_updated.replace(tzinfo=None)
        if position_id is None:
            return execute(self.dsn, """INSERT INTO positions (id, asset, size, average_entry_price, current_price,
                                        last_updated, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)
                                        RETURNING id::text""",
                           (str(uuid.uuid4()), position.asset, position.size, position.average_entry_price, position.current_price,
                            naive, naive))[0][0]
        execute(self.dsn, """UPDATE positions SET size = %s, average_entry_price = %s, current_price = %s,
                             closed_at = %s, last_updated = %s, version = version + 1 WHERE id = %s""",
                (position.size, position.average_entry_price, position.current_price,
                 None if position.closed_at is None else position.closed_at.replace(tzinfo=None), naive, position_id))
        return position_id

    def new_exits(self, position_id: str) -> list[dict]:
        rows = execute(self.dsn, """SELECT signal_id::text, body FROM msd.signals
                                    WHERE body->'metadata'->>'position_id' = %s ORDER BY created_at""", (position_id,))
        fresh = [body for signal_id, body in rows if signal_id not in self.seen]
        self.seen.update(signal_id for signal_id, _ in rows)
        return fresh


def daemon_exits(daemon: Daemon, start: datetime) -> list[tuple]:
    positions = {asset: opening(asset, start) for asset in HISTORIES}
    ids = {asset: daemon.write_row(None, position) for asset, position in positions.items()}
    marks: dict[str, D] = {}
    daemon.turn()                                   # restores and reads every open row at `start`
    decided: list[tuple] = []

    def turn_at(now: datetime, verify: bool = False) -> None:
        """A turn at `now`; each exit it sent fills at once and its row is written and announced."""
        daemon.now = now
        daemon.turn(verify)
        for asset in sorted(HISTORIES):
            for body in daemon.new_exits(ids[asset]):
                meta = body["metadata"]
                decided.append(said(datetime.fromisoformat(meta["decided_at"]) - start, asset, meta["exit_reason"],
                                    meta["quantity"], meta["rule_params"].get("threshold_price"),
                                    meta["trigger_price"]))
                assert body["signal_type"] == ("sell" if positions[asset].size > 0 else "buy")
                assert meta["urgency"] is True
                level = D(meta["rule_params"]["threshold_price"])      # fills at its level, as the backtest's
                positions[asset] = apply_fill(positions[asset], asset, closing_side(positions[asset]),
                                              D(meta["quantity"]), level, D(0), now)
                daemon.write_row(ids[asset], replace(positions[asset], current_price=marks[asset]))
                daemon.queues["positions"].put(PositionUpdate(ids[asset], asset, positions[asset].size, D(0), D(0),
                                                              "one-way", None, None, "order_execution", None, now))

    next_pass = start + VERIFY

    def turn_while_due(until: datetime) -> None:
        nonlocal next_pass
        while True:
            moment = min(m for m in (daemon.role.debouncer.next_due_at(), next_pass) if m is not None)
            if moment > until:
                return
            verify = moment == next_pass
            next_pass += VERIFY if verify else timedelta(0)
            turn_at(max(moment, daemon.now), verify)

    for tick in range(max(len(h[3]) for h in HISTORIES.values())):
        at = start + (tick + 1) * TICK
        turn_while_due(at)
        for asset, history in sorted(HISTORIES.items()):
            if tick < len(history[3]):
                marks[asset] = D(history[3][tick])
                daemon.queues["exit_prices"].put(Trade(asset, at, marks[asset], D(1), "buy", f"t{tick}"))
        turn_at(at)
        turn_at(at)                                 # the updates of the rows written are taken
    turn_while_due(start + END)
    assert not any(state.in_flight for state in daemon.role.book.values())
    return decided


def run_both(backend, tmp_path, pacing: str) -> tuple[list, list]:
    dsn, vhost = backend
    for table in ("msd.position_exit_state", "msd.signals", "positions"):    # the module's database is shared
        execute(dsn, f"DELETE FROM {table}")
    start = datetime.now(timezone.utc).replace(microsecond=0)
    config = write_config(tmp_path, dsn, vhost, pacing)
    daemon = Daemon(dsn, vhost, config, start)
    try:
        live = sorted(daemon_exits(daemon, start))
    finally:
        daemon.publisher.close()
        daemon.db.close()
    return live, sorted(e for asset in HISTORIES for e in backtest_exits(asset, start, config))


def test_the_daemon_role_and_the_backtest_decide_the_same_exits(backend, tmp_path):
    live, replayed = run_both(backend, tmp_path, "unpaced")
    assert live == replayed
    assert {e[2] for e in live} == {"take_profit_step", "trailing_stop", "breakeven_stop", "stop_loss"}


def test_debounce_and_asset_rate_pace_both_alike(backend, tmp_path):
    live, replayed = run_both(backend, tmp_path, "paced")
    assert live == replayed
    # Decided when the debounce released them, between ticks (every 0.5 s), or at a pass.
    assert live and all(e[0] % TICK.total_seconds() or e[0] % VERIFY_EVERY_S == 0 for e in live)
    # CDNUSDT's second step, released at 2.4 s as its cooldown ends, waits for the asset's next
    # token (at 3.4 s); no price comes after it: the verification pass at 5 s sends it.
    assert [(e[0], e[2]) for e in live if e[1] == "CDNUSDT"] == [(1.4, "take_profit_step"), (5.0, "take_profit_step")]
