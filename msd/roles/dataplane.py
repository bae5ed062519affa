"""Reading the bounded data-plane queues the supervisor wires between roles."""
from __future__ import annotations

import queue
from typing import Any, Callable


def drain(source: Any, handle: Callable[[Any], None], *, timeout: float, max_items: int = 5000) -> int:
    """Wait up to `timeout` for one item, then take whatever else is ready (at most `max_items`)."""
    try:
        handle(source.get(timeout=timeout))
    except queue.Empty:
        return 0
    count = 1
    while count < max_items:
        try:
            handle(source.get_nowait())
        except queue.Empty:
            break
        count += 1
    return count
