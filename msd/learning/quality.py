"""Live (prequential) quality of a model's calls, from outcomes labelled after the fact. Pure."""
from __future__ import annotations

from typing import Sequence

from msd.ml.dataset import Outcome


def live_accuracy(outcomes: Sequence[Outcome], round_trip_fee: float) -> tuple[float | None, int]:
    """Share of the calls whose side matched the market's move, over moves that cleared the
    fees (smaller moves had no right answer, as in training). Returns (accuracy, samples)."""
    decided = [o for o in outcomes if abs(o.forward_return) > round_trip_fee]
    if not decided:
        return None, 0
    right = sum((o.forward_return > 0) == (o.side.lower() == "buy") for o in decided)
    return right / len(decided), len(decided)
