"""How msd declares the queues it touches (CONTRACTS.md §0.1).

All neighbours publish to the default exchange with routing key = queue name, so a queue
exists only once someone declares it. Declaring with arguments that differ from the existing
queue's closes the channel with 406 PRECONDITION_FAILED, hence one declare mode per owner.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import pika.adapters.blocking_connection

from msd.bus.connection import errors
from msd.errors import ConfigError

DeclareMode = Literal["durable", "ws_gateway", "passive"]
DECLARE_MODES: tuple[str, ...] = get_args(DeclareMode)

# Exactly what ws-gateway's src/services/queue/setup.py uses; any difference is a 406.
WS_GATEWAY_ARGUMENTS = {
    "x-message-ttl": 86400000,
    "x-max-length": 100000,
    "x-overflow": "drop-head",
}


@dataclass(frozen=True)
class QueueSpec:
    """A queue and how to declare it.

    durable:    durable, no arguments (order-manager, position-manager, model-service queues).
    ws_gateway: durable with ws-gateway's exact arguments, so msd can create it first.
    passive:    only check that it exists; a missing queue is an error, never created.
    """
    name: str
    declare: DeclareMode

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("queue name", self.name, "a non-empty string")
        if self.declare not in DECLARE_MODES:
            raise ConfigError(f"queue {self.name!r} declare", self.declare, " | ".join(DECLARE_MODES))


def declare(channel: pika.adapters.blocking_connection.BlockingChannel, spec: QueueSpec) -> int:
    """Declare `spec` on `channel`; returns the queue's ready message count.

    Raises BrokerUnavailable with the broker's reason (404 NOT_FOUND for a missing passive
    queue, 406 PRECONDITION_FAILED for mismatched arguments). Either closes the channel.
    """
    with errors(f"declare queue {spec.name!r} ({spec.declare})"):
        ok = channel.queue_declare(spec.name, **declare_arguments(spec))
    return ok.method.message_count


def declare_arguments(spec: QueueSpec) -> dict:
    """queue_declare's keyword arguments for `spec` (blocking and asynchronous channels alike)."""
    if spec.declare == "passive":
        return {"passive": True}
    if spec.declare == "ws_gateway":
        return {"durable": True, "arguments": dict(WS_GATEWAY_ARGUMENTS)}
    return {"durable": True}
