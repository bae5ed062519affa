"""Starting, signalling and reaping real child processes (`spawn` start method).

The arbiter talks to a host through four calls (spawn, kill, exit_code, wait) so that its
logic can be tested with a hand-written fake host; this is the real one.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from msd.config import Config
from msd.supervisor.spawn import ChildSpec, child_entry


@dataclass
class Handle:
    name: str
    process: Any
    conn: Any                # supervisor's end of the child's private pipe

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def sentinel(self) -> int:
        return self.process.sentinel


class ProcessHost:
    def __init__(self) -> None:
        self._mp = multiprocessing.get_context("spawn")

    def make_queue(self, maxsize: int) -> Any:
        return self._mp.Queue(maxsize=maxsize)

    def spawn(self, name: str, module: str, config: Config, queues: Mapping[str, Any],
              args: Mapping[str, Any] | None = None) -> Handle:
        parent_end, child_end = self._mp.Pipe(duplex=True)
        spec = ChildSpec(name=name, module=module, config=config, conn=child_end,
                         queues=dict(queues), args=dict(args or {}))
        process = self._mp.Process(target=child_entry, args=(spec,), name=f"msd-{name}", daemon=False)
        process.start()
        child_end.close()   # only the child holds this end now, so its death closes the pipe
        return Handle(name=name, process=process, conn=parent_end)

    def kill(self, handle: Handle, sig: int = signal.SIGTERM) -> None:
        try:
            os.kill(handle.pid, sig)
        except ProcessLookupError:
            pass

    def exit_code(self, handle: Handle) -> int | None:
        """The exit code once the process has ended (reaping it), else None."""
        code = handle.process.exitcode
        if code is not None:
            handle.process.join(0)
        return code

    def release(self, handle: Handle) -> None:
        """Close the supervisor's end of a reaped child's pipe (after its last messages were read)."""
        handle.conn.close()

    def wait(self, handles: Iterable[Handle], extra: Iterable[int], timeout: float) -> None:
        waitables: list[Any] = list(extra)
        for h in handles:
            waitables.extend((h.conn, h.sentinel))
        multiprocessing.connection.wait(waitables, timeout)

    def send(self, handle: Handle, message: tuple[str, dict]) -> None:
        """Send a control message to a child; a child that is gone is reaped on the next turn."""
        try:
            handle.conn.send(message)
        except (BrokenPipeError, EOFError, OSError):
            pass

    def receive(self, handle: Handle) -> list[tuple[str, dict]]:
        """All messages the child has sent so far (an ended pipe yields nothing)."""
        messages = []
        try:
            while handle.conn.poll():
                messages.append(handle.conn.recv())
        except (EOFError, OSError):
            pass
        return messages


def repair_queue_lock(queue: Any, side: str) -> None:
    """Free the lock a killed child may have died holding on its side of a data-plane queue.

    Each queue has exactly one writer and one reader process. When the child on `side`
    ("reader" or "writer") is dead, its lock can only be held by the corpse, so releasing it is
    safe, and it keeps the respawned child from blocking forever. The live peer's lock on the
    other side is never touched.
    """
    lock = getattr(queue, "_rlock" if side == "reader" else "_wlock", None)
    if lock is None:
        return
    lock.acquire(block=False)   # succeeds unless the corpse holds it
    lock.release()              # frees ours, or the corpse's
