-- A signal whose publish lost its broker connection before the confirm may be on the queue
-- already: it must go out again under its own signal_id (order-manager dedupes), never expire
-- as "unsent" (an exit would then be decided again under a new id, which nobody can dedupe).
ALTER TABLE msd.signals ADD COLUMN IF NOT EXISTS unconfirmed_at timestamptz;
