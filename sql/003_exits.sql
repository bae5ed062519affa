-- Exit engine (DESIGN.md §7): exit signals go through the same outbox as strategy signals, but
-- they are neither warm-up nor model decisions, so they get their own mode. Counting them as
-- "warmup" would pollute the warm-up statistics and the training data that read this column.
ALTER TABLE msd.signals DROP CONSTRAINT signals_mode_check;
ALTER TABLE msd.signals ADD CONSTRAINT signals_mode_check CHECK (mode IN ('warmup', 'model', 'exit'));

-- Closing a position deletes every state row of that position id, whatever the side.
CREATE INDEX position_exit_state_position_idx ON msd.position_exit_state (asset, position_key);
