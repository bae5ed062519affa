-- Learning: what a model version needs beyond 001 (DESIGN.md §5, §6), the outcome of every
-- per-strategy training attempt, and the watermark of the shared `orders` reconciliation.

ALTER TABLE msd.model_versions
    ADD COLUMN model_type        text        NOT NULL DEFAULT 'logistic',
    ADD COLUMN feature_version   text        NOT NULL DEFAULT '1',
    -- sha256 of manifest.json: the manifest names the features in order, so editing it would
    -- feed a model columns in the wrong order as surely as editing the arrays.
    ADD COLUMN manifest_sha256   text        CHECK (manifest_sha256 ~ '^[0-9a-f]{64}$'),
    -- Did it pass every promotion check when trained (gate and incumbent margin); the checks
    -- behind the answer, verbatim.
    ADD COLUMN promoted_when_trained  boolean NOT NULL DEFAULT false,
    ADD COLUMN gate_reasons      jsonb       NOT NULL DEFAULT '[]',
    -- Usable labelled rows it was trained and validated on: the next run compares against it
    -- to decide whether enough new data arrived (data drought).
    ADD COLUMN labelled_rows     integer     NOT NULL DEFAULT 0 CHECK (labelled_rows >= 0),
    ADD COLUMN validation_from   timestamptz,
    ADD COLUMN validation_to     timestamptz,
    ADD COLUMN activated_at      timestamptz,
    -- Retention removes artifact files, never these rows (SC-006).
    ADD COLUMN files_pruned_at   timestamptz;

CREATE INDEX model_versions_strategy_idx ON msd.model_versions (strategy_id, version DESC);

-- What kind of audit row: activation, rollback, deactivation or a plain mode change.
ALTER TABLE msd.mode_transitions
    ADD COLUMN event text CHECK (event IN ('activation', 'rollback', 'deactivation', 'mode_change'));

-- One row per strategy per training attempt, including those that trained nothing, so that a
-- data drought or an unusable dataset is visible rather than silent.
CREATE TABLE msd.training_outcomes (
    id               bigserial PRIMARY KEY,
    training_run_id  bigint REFERENCES msd.training_runs (id),
    request_id       text,
    strategy_id      text        NOT NULL,
    outcome          text        NOT NULL CHECK (outcome IN ('trained', 'skipped')),
    reason           text        NOT NULL,
    model_version    integer,
    detail           jsonb       NOT NULL DEFAULT '{}',
    at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX training_outcomes_strategy_idx ON msd.training_outcomes (strategy_id, at);

-- How far the shared `orders` table has been read. Its clock is `updated_at`, TIMESTAMP
-- without time zone holding UTC (CONTRACTS.md §5), so the watermark has the same type.
CREATE TABLE msd.reconcile_state (
    name        text PRIMARY KEY,
    watermark   timestamp   NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
