-- Active/standby: one leadership lease in PostgreSQL, and fencing of every effect-leading write.
--
-- The lease is one row. An instance leads while it is the holder and `expires_at` (the
-- database's clock) has not passed; it renews every leadership.lease_renew_s. Taking the lease
-- over (free, released or expired) increments `epoch`. Every process of the leader opens its
-- connections with the session setting `msd.epoch` = its epoch (msd.store.db), and the
-- triggers below refuse a write to an effect table by any other epoch, in the writing
-- statement itself. A process without the setting (single-instance msd, msd-ctl, the tests'
-- own SQL) is not fenced.
--
-- Why the ordering holds: the fence takes FOR KEY SHARE on the lease row where epoch = the
-- writer's; `epoch` is a key column (unique), so the take-over's UPDATE of it waits until every
-- writer transaction of the old epoch has ended, and a writer that asks after the take-over
-- finds no row. Renewal updates non-key columns only, so it neither waits for writers nor
-- makes them wait.

CREATE TABLE msd.leadership (
    name         text PRIMARY KEY CHECK (name = 'msd'),
    epoch        bigint      NOT NULL UNIQUE CHECK (epoch >= 0),
    holder       text,                       -- "<instance>/<supervisor pid>", NULL when free
    host         text,
    pid          integer,
    config_hash  text,
    acquired_at  timestamptz,
    renewed_at   timestamptz,
    expires_at   timestamptz,
    CHECK ((holder IS NULL) = (expires_at IS NULL))
);
INSERT INTO msd.leadership (name, epoch) VALUES ('msd', 0);

-- Audit of every leadership transition (acquired, renewal failed/lost, released, stepped down).
-- `at` is clock_timestamp(): an `acquired` row is written after the take-over's UPDATE got its
-- lock, so every write of the previous epoch has committed before it.
CREATE TABLE msd.leadership_events (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    epoch   bigint      NOT NULL,
    event   text        NOT NULL CHECK (event IN ('acquired', 'released', 'lost', 'stepped_down')),
    holder  text        NOT NULL,
    host    text        NOT NULL,
    pid     integer     NOT NULL,
    detail  text
);
CREATE INDEX leadership_events_at_idx ON msd.leadership_events (at);

CREATE FUNCTION msd.writer_epoch() RETURNS bigint LANGUAGE sql STABLE AS
$$ SELECT nullif(current_setting('msd.epoch', true), '')::bigint $$;

-- Statement-level fence: one check per writing statement, whatever the number of rows.
CREATE FUNCTION msd.fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    writer bigint := msd.writer_epoch();
BEGIN
    IF writer IS NOT NULL THEN
        PERFORM 1 FROM msd.leadership WHERE epoch = writer FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'fenced: epoch % no longer holds the leadership lease (write to %.% refused)',
                writer, TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = 'MF001';
        END IF;
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE
    effect_table text;
BEGIN
    -- The outbox (insert, mark-sent), exit state and in-flight exits, version activation, the
    -- explorer's random-stream position, schedules, mode switches and warm-up spend.
    FOREACH effect_table IN ARRAY ARRAY['signals', 'position_exit_state', 'model_versions',
                                        'strategy_random_state', 'schedule_state', 'mode_transitions',
                                        'warmup_budgets', 'strategy_pauses'] LOOP
        EXECUTE format('CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON msd.%I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION msd.fence()', effect_table);
    END LOOP;
END $$;

-- Which epoch recorded a signal and which marked it sent, and when the later of the two
-- happened (DB clock, after the fence's lock): the audit trail that shows no old epoch wrote
-- an effect after a new one took over (`coalesce(sent_epoch, epoch)` wrote at `written_at`).
ALTER TABLE msd.signals ADD COLUMN epoch bigint, ADD COLUMN sent_epoch bigint, ADD COLUMN written_at timestamptz;

CREATE FUNCTION msd.stamp_signal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    writer bigint := msd.writer_epoch();
BEGIN
    IF writer IS NULL THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'INSERT' THEN
        NEW.epoch := writer;
        NEW.written_at := clock_timestamp();
    ELSIF NEW.outbox_state = 'sent' AND OLD.outbox_state IS DISTINCT FROM 'sent' THEN
        NEW.sent_epoch := writer;
        NEW.written_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER stamp_epoch BEFORE INSERT OR UPDATE ON msd.signals FOR EACH ROW EXECUTE FUNCTION msd.stamp_signal();
