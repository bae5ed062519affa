"""A full data-plane queue: ticks may be dropped, position updates and closed bars never are."""
import queue
import threading
from pathlib import Path
from datetime import datetime, timezone
from decimal import Decimal as D

from msd.config import load_config
from msd.values.messages import Kline, PositionUpdate, Trade
from msd.roles.consumer.main import BatchProcessor, must_deliver
from msd.roles.runtime.dataplane import Backlog

SHIPPED = Path(__file__).resolve().parents[2] / "etc" / "model-service.yaml"
T0 = datetime(2025, 11, 20, 10, 0, tzinfo=timezone.utc)


def update(size):
    return PositionUpdate("3d6f0a51-2b7e-4d8c-9a1f-0e2d3c4b5a69", "BTCUSDT", D(size), D(0), D(0), "one-way",
                          None, None, "order_execution", None, T0)


def test_backlog_keeps_order_and_moves_on_as_room_appears():
    target = queue.Queue(maxsize=2)
    backlog = Backlog({"positions": target})
    for size in ("1", "0", "-2", "3"):
        backlog.put("positions", update(size))
    assert backlog.sizes() == {"positions": 2}
    taken = [target.get_nowait().size for _ in range(2)]
    backlog.flush()
    taken += [target.get_nowait().size for _ in range(2)]
    assert taken == [D(1), D(0), D(-2), D(3)] and backlog.sizes() == {"positions": 0}


def test_backlog_over_its_limit_blocks_for_room_instead_of_dropping():
    target = queue.Queue(maxsize=1)
    backlog = Backlog({"positions": target}, limit=2)
    taken = []

    def reader():
        while len(taken) < 5:
            taken.append(target.get(timeout=5).size)

    thread = threading.Thread(target=reader)
    thread.start()
    for size in range(1, 6):
        backlog.put("positions", update(str(size)))
    backlog_left = backlog.sizes()["positions"]
    while backlog.sizes()["positions"]:
        backlog.flush()
    thread.join(10)
    assert taken == [D(n) for n in range(1, 6)] and backlog_left <= 2


class _Ctx:
    name = "consumer"

    def __init__(self, queues):
        self.queues, self.stopping = queues, threading.Event()
        self.config = load_config(SHIPPED, env={})


def test_consumer_never_drops_a_size_zero_update_but_may_drop_a_tick():
    """Regression (issue 8): `_put` dropped position updates and prices when a data-plane queue
    was full; a close then never reached the exit role until its next table check."""
    queues = {"positions": queue.Queue(maxsize=1), "exit_prices": queue.Queue(maxsize=1),
              "market": queue.Queue(maxsize=10)}
    processor = BatchProcessor(_Ctx(queues), db=None, kind_of_queue={})
    queues["positions"].put_nowait(update("1"))          # full
    queues["exit_prices"].put_nowait("earlier tick")    # full
    processor._put("positions", update("0"), 0.0)
    tick = Trade("BTCUSDT", T0, D(100), D(1), "buy", "t1")
    processor._put("exit_prices", tick, 0.0)
    bar = Kline("BTCUSDT", T0, D(1), D(2), D(1), D(1), D(1), D(1), True, T0)
    processor._put("exit_prices", bar, 0.0)
    assert processor.counters.dropped == 1               # the tick
    assert queues["positions"].get_nowait().size == 1
    processor.backlog.flush()
    assert queues["positions"].get_nowait().size == 0
    queues["exit_prices"].get_nowait()
    processor.backlog.flush()
    assert queues["exit_prices"].get_nowait() is bar


def test_what_must_be_delivered():
    assert must_deliver(update("0")) and must_deliver(update("1"))
    assert must_deliver(Kline("B", T0, D(1), D(1), D(1), D(1), D(1), D(1), True, T0))
    assert not must_deliver(Kline("B", T0, D(1), D(1), D(1), D(1), D(1), D(1), False, T0))
    assert not must_deliver(Trade("B", T0, D(1), D(1), "buy", "t"))


def test_market_items_carry_their_arrival_times_and_a_closed_bar_is_still_never_dropped():
    """The signaller's queue gets dataplane.Timed (for msd_signal_path_seconds); wrapping must
    not hide a closed bar from must_deliver."""
    from msd.roles.runtime.dataplane import Timed
    queues = {"positions": queue.Queue(maxsize=1), "exit_prices": queue.Queue(maxsize=1),
              "market": queue.Queue(maxsize=1)}
    processor = BatchProcessor(_Ctx(queues), db=None, kind_of_queue={})
    tick = Trade("BTCUSDT", T0, D(100), D(1), "buy", "t1")
    processor._put("market", tick, 12.5)
    bar = Kline("BTCUSDT", T0, D(1), D(2), D(1), D(1), D(1), D(1), True, T0)
    processor._put("market", bar, 13.0)                  # the queue is full: waits in the backlog
    first = queues["market"].get_nowait()
    assert isinstance(first, Timed) and first.item is tick and first.received == 12.5
    assert first.forwarded >= first.received
    processor.backlog.flush()
    assert queues["market"].get_nowait().item is bar
    assert processor.counters.dropped == 0
