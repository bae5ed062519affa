-- Issue #8: an exit waiting in the outbox whose position closed, flipped or shrank below it
-- before the broker came back is `voided`, never sent (order-manager would open a position the
-- other way with it). Neither a publish failure nor an expiry: its own state, reason in last_error.
ALTER TABLE msd.signals DROP CONSTRAINT IF EXISTS signals_outbox_state_check;
ALTER TABLE msd.signals ADD CONSTRAINT signals_outbox_state_check
    CHECK (outbox_state IN ('pending', 'sent', 'failed', 'expired', 'voided'));
ALTER TABLE msd.signals ADD COLUMN voided_at timestamptz;
