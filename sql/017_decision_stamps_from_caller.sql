-- Issue 12: a time a later decision reads is the caller's `now` (its injected clock: event time
-- in a backtest or a test), written by the code that decides, never the database's `now()`.
-- These columns had `DEFAULT now()`; msd.store now always writes them (msd.store.outbox's
-- insert writes the signal's own timestamp, msd.store.pauses the pause's and the budget's
-- `now`), so the defaults go: an insert that forgot the time fails instead of silently taking
-- the wall clock, which in a replay is years away from the decisions it is compared with
-- (expiry and in-flight exposure read signals.created_at; the warm-up duration reads
-- warmup_budgets.started_at).
ALTER TABLE msd.signals ALTER COLUMN created_at DROP DEFAULT;
ALTER TABLE msd.warmup_budgets ALTER COLUMN started_at DROP DEFAULT;
ALTER TABLE msd.strategy_pauses ALTER COLUMN paused_at DROP DEFAULT;
