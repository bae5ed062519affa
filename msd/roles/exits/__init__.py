"""The exit process: position updates + prices -> exit rules -> exit signals (DESIGN §7).

main.py is its state and loop (`run`), positions.py its reads of the positions table,
sending.py its decisions and signals, tables.py its reads of the shared tables, report.py its
status, config.py its section. Every change of a position's state is a call of the pure step
msd.strategies.exit_step (the backtest calls it too); the rules themselves are msd.rules.
"""
