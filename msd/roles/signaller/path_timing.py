"""Where the time between a market update's delivery and its signal's confirm goes.

Observed into msd_signal_path_seconds{stage} for each signal a market-triggered strategy decided
on an update (benchmarks/signal_latency.py prints the breakdown). All times are time.monotonic(),
one clock for every process of the host; the consumer's two arrive with the update
(dataplane.Timed). The broker hops (publisher -> consumer, signal -> its reader) are outside msd.

`publish_confirm` runs from the committed outbox row to the moment the publisher's I/O thread
received the broker's confirm (msd.bus.publisher): the hand-over to the connection, the broker's
routing and fsync, and the ack's way back. Publishes are pipelined, so the signaller's loop no
longer spends that time: it goes on with its next turn, and the signal is observed here when the
confirm is applied, a turn or so later (`total` ends at the confirm's arrival all the same).
"""
from __future__ import annotations

from dataclasses import dataclass

from msd import metrics


@dataclass(frozen=True)
class Arrival:
    """When the newest update of an asset was received by the consumer, handed over, taken."""
    received: float
    forwarded: float
    taken: float


@dataclass(frozen=True)
class DecisionTimes:
    """When the evaluation took its snapshot, how long until its exposure was read, and from
    then until the turn's decisions were done (the signaller's turn is one pure step,
    msd.strategies.signal_turn: a signal waits for the strategies decided after it in the
    turn before the turn's signals are written together)."""
    started: float
    exposure_s: float
    strategy_s: float


def stages(arrival: Arrival, decision: DecisionTimes, write_s: float, publish_s: float,
           confirmed: float) -> dict[str, float]:
    """Seconds per stage of one signal's path, and the total from delivery to confirm."""
    return {
        "consumer": arrival.forwarded - arrival.received,
        "dataplane": arrival.taken - arrival.forwarded,
        "queued_in_turn": decision.started - arrival.taken,
        "exposure": decision.exposure_s,
        "strategy": decision.strategy_s,
        "outbox_write": write_s,
        "publish_confirm": publish_s,
        "total": confirmed - arrival.received,
    }


def observe(arrival: Arrival, decision: DecisionTimes, write_s: float, publish_s: float, confirmed: float) -> None:
    for stage, seconds in stages(arrival, decision, write_s, publish_s, confirmed).items():
        metrics.SIGNAL_PATH_SECONDS.labels(stage).observe(max(seconds, 0.0))
