"""The training job's background read: its value or its exception reaches the waiting thread,
which keeps beating while it waits."""
import threading

import pytest

from msd.learning.job import Background


def test_background_returns_the_value_and_beats_while_waiting():
    release = threading.Event()
    beats = []

    def slow(x):
        release.wait(5)
        return x * 2

    work = Background(slow, 21)
    threading.Timer(1.5, release.set).start()
    assert work.result(lambda: beats.append(1)) == 42
    assert beats          # at least one beat during the wait


def test_background_raises_the_exception_of_the_read():
    def broken():
        raise LookupError("no such strategy")

    with pytest.raises(LookupError, match="no such strategy"):
        Background(broken).result()
