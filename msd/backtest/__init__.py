"""`msd backtest`: msd's decision loop replayed over recorded candles at full speed.

The live decisions run unchanged (strategies' warm-up and model plans through
msd.strategies.engine, exit rules through msd.rules.decide, order-manager's and
position-manager's rules through msd.exchange, labels, training and the gate through
msd.learning/msd.ml); this package supplies what the daemon gets from the outside world:
market events built from candles, an event-time clock, fills by stated rules, and an account.
It never writes to msd's database or models directory (with --from-db the `msd` entry point
reads the recorded bars for it).
"""
