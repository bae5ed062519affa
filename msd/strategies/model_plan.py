"""A model-mode decision (user story 3): the active model's calibrated probabilities pick the
side (the one tie rule of msd.ml.estimator) and its probability that the call pays after costs
is the confidence; the same limits as warm-up apply (frequency, exposure cap). Pure."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Mapping

from msd.ml.features import BUY, LABELS, NO_CALL, SELL, MissingFeature, features_from_snapshot
from msd.strategies.params import WarmupParams
from msd.strategies.warmup import ExposureUnknown, Planned, Skip, exposure_allows, frequency_allows
from msd.values.parsing import finite_decimal

CENT = Decimal("0.01")


@dataclass(frozen=True)
class ModelCall:
    """What the model said about one snapshot: the calibrated probabilities that a buy pays,
    that a sell pays and that neither does, over the horizon after costs."""
    version: int
    buy_probability: float
    sell_probability: float
    neither_probability: float

    @property
    def direction(self) -> int:
        if self.buy_probability > self.sell_probability:
            return BUY
        return SELL if self.sell_probability > self.buy_probability else NO_CALL

    @property
    def side(self) -> str | None:
        return {BUY: "buy", SELL: "sell"}.get(self.direction)

    @property
    def confidence(self) -> float:
        """The estimated probability that the call pays after costs (0 without a call)."""
        return {BUY: self.buy_probability, SELL: self.sell_probability}.get(self.direction, 0.0)


def model_features(wire_snapshot: Mapping, now: datetime):
    """The feature vector of a live snapshot, built by the same code as training (FR-003)."""
    return features_from_snapshot(wire_snapshot, {"decided_at": now})


def scaled_amount(params: WarmupParams, confidence: float, threshold: float) -> Decimal:
    """From min_amount at the confidence threshold to max_amount at certainty, whole cents."""
    share = 1.0 if threshold >= 1.0 else max(0.0, min(1.0, (confidence - threshold) / (1.0 - threshold)))
    span = params.max_amount_usdt - params.min_amount_usdt
    return (params.min_amount_usdt + span * finite_decimal(round(share, 6))).quantize(CENT, rounding=ROUND_DOWN)


def plan_model_signal(params: WarmupParams, call: ModelCall | MissingFeature, threshold: float,
                      exposure_usdt: Decimal | ExposureUnknown, now: datetime,
                      last_signal_at: datetime | None) -> Planned | Skip:
    """Decide one model signal or say why not; a missing feature means no signal, never a 0."""
    if not frequency_allows(params, last_signal_at, now):
        return Skip("frequency")
    if isinstance(call, MissingFeature):
        return Skip(f"missing_feature:{call.name}")
    if isinstance(exposure_usdt, ExposureUnknown):
        return Skip("exposure_unknown")
    if call.side is None:
        return Skip("no_call")
    if call.confidence < threshold:
        return Skip("below_confidence")
    amount = scaled_amount(params, call.confidence, threshold)
    if not exposure_allows(call.side, amount, exposure_usdt, params.max_exposure_usdt):
        return Skip("exposure_limit")
    reasoning = (f"model v{call.version}: P(buy pays)={call.buy_probability:.3f}, "
                 f"P(sell pays)={call.sell_probability:.3f}, {amount} USDT; "
                 f"exposure {exposure_usdt} USDT")
    return Planned(side=call.side, amount_usdt=amount, confidence=call.confidence, reasoning=reasoning, call=call)


def prediction_label(call: ModelCall) -> int:
    return LABELS[call.side] if call.side else NO_CALL
