-- Hardening (issue #10): decisions expire, dead letters are bounded, the random explorer's
-- stream survives restarts.

-- A warm-up or model signal still unsent after signaller.max_signal_age_s is not sent any more:
-- it is `expired` (never a publish failure: SC-002 counts signals that should have gone out).
ALTER TABLE msd.signals DROP CONSTRAINT IF EXISTS signals_outbox_state_check;
ALTER TABLE msd.signals ADD CONSTRAINT signals_outbox_state_check
    CHECK (outbox_state IN ('pending', 'sent', 'failed', 'expired'));
ALTER TABLE msd.signals ADD COLUMN expired_at timestamptz;

-- Dead letters keep at most consumer.dead_letters.max_payload_bytes of a body, with its length.
ALTER TABLE msd.dead_letters ADD COLUMN payload_bytes integer;
-- Counting stored rows per source (the cap) and deleting old ones (retention) read by source and time.
CREATE INDEX dead_letters_source_received_idx ON msd.dead_letters (source, received_at);

-- Dead letters beyond the per-source cap: counted here instead of stored.
CREATE TABLE msd.dead_letter_overflow (
    source      text        NOT NULL,
    reason      text        NOT NULL,
    count       bigint      NOT NULL CHECK (count > 0),
    first_at    timestamptz NOT NULL DEFAULT now(),
    last_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, reason)
);

-- Where each strategy's random stream is: the generator state after its last decision, so a
-- restart continues the stream instead of repeating its first decisions from the seed.
CREATE TABLE msd.strategy_random_state (
    strategy_id  text        PRIMARY KEY,
    seed         text        NOT NULL,       -- the configured seed (any integer)
    draws        bigint      NOT NULL CHECK (draws >= 0),
    state        jsonb       NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
