"""benchmarks/signal_latency.py's every-tick latency: a coalesced tick counts until the signal of
the newer tick that covered it, so coalescing more cannot make the daemon look faster."""
import numpy as np

from benchmarks.signal_latency import every_tick_latency


def test_a_coalesced_tick_waits_for_the_newer_ticks_signal():
    sent = {1.0: 0.000, 1.01: 0.005, 1.02: 0.010}
    received = {1.0: 0.008, 1.02: 0.020}          # 1.01 was coalesced into 1.02
    assert np.allclose(every_tick_latency(sent, received), [8.0, 15.0, 10.0])


def test_an_earlier_arriving_newer_signal_covers_an_older_tick():
    sent = {1.0: 0.0, 1.01: 0.001}
    received = {1.0: 0.050, 1.01: 0.010}          # the newer tick's signal came first
    assert np.allclose(every_tick_latency(sent, received), [10.0, 9.0])


def test_ticks_after_the_last_signal_are_left_out():
    assert np.allclose(every_tick_latency({1.0: 0.0, 1.01: 0.001}, {1.0: 0.002}), [2.0])
