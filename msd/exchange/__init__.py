"""The neighbours' order and position rules (CONTRACTS §1.2, §3.5, §3.6) as pure functions.

One home for how order-manager turns a signal into an order (order type, quantity rounding,
minimum order value, reduceOnly) and how position-manager writes a `positions` row (one row per
(asset, mode), flip in one update, entry and closed_at per path). The paper exchange (msd-sim)
and the backtest both use these, so they cannot drift apart. Stdlib and msd.values only.
"""
