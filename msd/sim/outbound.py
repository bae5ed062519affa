"""What the paper exchange sends, independent of the broker client: built by the pure stand-ins,
published by the edge (`msd.bus.plain_link`) with exactly these properties."""
from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping


@dataclass(frozen=True)
class Outbound:
    """One AMQP message to the default exchange, routing key = `queue`.

    `persistent` maps to delivery_mode 2; None fields are left unset, because the neighbours
    differ exactly there (order events are transient with a content type, the others are not).
    """
    queue: str
    body: bytes
    persistent: bool
    headers: Mapping[str, str] | None = None
    content_type: str | None = None
    timestamp: int | None = None            # AMQP timestamp property, epoch seconds
    payload: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def json_body(payload: Mapping[str, Any]) -> bytes:
    """`json.dumps(..., default=str)` as the neighbours do; Decimals become their str()."""
    return json.dumps(payload, default=str).encode("utf-8")


def new_uuid(rng: random.Random) -> str:
    """A uuid4 string drawn from the seeded generator, so runs are reproducible."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def naive_iso(moment: datetime) -> str:
    """`datetime.utcnow().isoformat()` style: UTC, no offset, no Z (order-manager, ws-gateway)."""
    if moment.utcoffset() is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat()


def aware_iso(moment: datetime) -> str:
    """Aware UTC isoformat ending in +00:00 (position-manager events)."""
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch; a naive datetime is UTC."""
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)
