-- msd's own tables (DESIGN.md §5). Applied once by msd.store.migrate under an advisory lock;
-- never edit an applied file (its checksum is recorded): add a new numbered file instead.
-- Timestamps are timestamptz (UTC), money and sizes numeric (no scale: the producers' decimals
-- are kept exactly, "0E-8" included).

CREATE SCHEMA IF NOT EXISTS msd;

-- Every signal msd decided, with its publishing state (transactional outbox, DESIGN.md §8).
CREATE TABLE msd.signals (
    signal_id      uuid PRIMARY KEY,
    strategy_id    text        NOT NULL,
    asset          text        NOT NULL,
    signal_type    text        NOT NULL CHECK (signal_type IN ('buy', 'sell')),
    amount         numeric     NOT NULL CHECK (amount > 0),
    confidence     numeric     NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    mode           text        NOT NULL CHECK (mode IN ('warmup', 'model')),
    model_version  text,
    body           jsonb       NOT NULL,
    snapshot       jsonb       NOT NULL,
    trace_id       text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    outbox_state   text        NOT NULL DEFAULT 'pending'
                               CHECK (outbox_state IN ('pending', 'sent', 'failed')),
    attempts       integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    sent_at        timestamptz,
    last_error     text
);
-- The republisher scans only unsent signals, oldest first.
CREATE INDEX signals_outbox_pending_idx ON msd.signals (created_at) WHERE outbox_state = 'pending';
CREATE INDEX signals_strategy_created_idx ON msd.signals (strategy_id, created_at);

-- Every order event received. Deduplicated on the natural key, not event_id: order-manager
-- mints a new event_id per publish, so a republished event only repeats the order's state.
CREATE TABLE msd.order_events (
    id               bigserial PRIMARY KEY,
    event_id         text        NOT NULL,
    event_type       text        NOT NULL,
    order_id         text        NOT NULL,
    status           text        NOT NULL,
    filled_quantity  numeric     NOT NULL,
    signal_id        uuid,
    asset            text        NOT NULL,
    side             text        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    trace_id         text,
    payload          jsonb       NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT order_events_natural_key UNIQUE (order_id, status, filled_quantity)
);
CREATE INDEX order_events_signal_idx ON msd.order_events (signal_id);

-- Cumulative fill amounts already turned into executions, per order; the next event's
-- cumulative figures minus these give the next execution.
CREATE TABLE msd.order_fill_state (
    order_id         text PRIMARY KEY,
    signal_id        uuid        NOT NULL,
    asset            text        NOT NULL,
    side             text        NOT NULL CHECK (side IN ('buy', 'sell')),
    filled_quantity  numeric     NOT NULL CHECK (filled_quantity >= 0),
    average_price    numeric,
    fees             numeric,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per fill delta. price is NULL only when the producer sent no price at all.
CREATE TABLE msd.executions (
    id                   bigserial PRIMARY KEY,
    order_id             text        NOT NULL,
    signal_id            uuid        NOT NULL,
    strategy_id          text,
    asset                text        NOT NULL,
    side                 text        NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity             numeric     NOT NULL CHECK (quantity > 0),
    price                numeric     CHECK (price > 0),
    fee                  numeric     NOT NULL,
    cumulative_quantity  numeric     NOT NULL CHECK (cumulative_quantity > 0),
    executed_at          timestamptz NOT NULL,
    source               text        NOT NULL CHECK (source IN ('event', 'reconcile')),
    trace_id             text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT executions_order_cumulative_key UNIQUE (order_id, cumulative_quantity)
);
CREATE INDEX executions_signal_idx ON msd.executions (signal_id);
CREATE INDEX executions_asset_time_idx ON msd.executions (asset, executed_at);
CREATE INDEX executions_strategy_time_idx ON msd.executions (strategy_id, executed_at);

-- 1-minute bars from ws-gateway.kline; labels are measured on these.
CREATE TABLE msd.market_bars (
    asset       text        NOT NULL,
    minute      timestamptz NOT NULL,
    open        numeric     NOT NULL,
    high        numeric     NOT NULL,
    low         numeric     NOT NULL,
    close       numeric     NOT NULL,
    volume      numeric     NOT NULL,
    turnover    numeric     NOT NULL,
    trades      integer,
    confirmed   boolean     NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asset, minute)
);

CREATE TABLE msd.training_runs (
    id           bigserial PRIMARY KEY,
    strategy_id  text,
    trigger      text        NOT NULL,
    reason       text,
    status       text        NOT NULL DEFAULT 'running'
                             CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled',
                                               'timed_out', 'skipped')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    pid          integer,
    summary      jsonb,
    error        text,
    CHECK ((status = 'running') = (finished_at IS NULL))
);
CREATE INDEX training_runs_running_idx ON msd.training_runs (started_at) WHERE status = 'running';

-- The artifacts live in var/models/<strategy>/v<N>/; the row pins them by path and sha256.
CREATE TABLE msd.model_versions (
    id               bigserial PRIMARY KEY,
    strategy_id      text        NOT NULL,
    version          integer     NOT NULL CHECK (version > 0),
    path             text        NOT NULL,
    sha256           text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    feature_names    jsonb       NOT NULL,
    label_mapping    jsonb       NOT NULL,
    training_config  jsonb       NOT NULL,
    metrics          jsonb       NOT NULL,
    is_active        boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    training_run_id  bigint REFERENCES msd.training_runs (id),
    CONSTRAINT model_versions_strategy_version_key UNIQUE (strategy_id, version)
);
-- At most one active version per strategy: activation and rollback swap it in one transaction.
CREATE UNIQUE INDEX model_versions_one_active_idx ON msd.model_versions (strategy_id) WHERE is_active;

CREATE TABLE msd.quality_metrics (
    id                 bigserial PRIMARY KEY,
    model_version_id   bigint           NOT NULL REFERENCES msd.model_versions (id) ON DELETE CASCADE,
    metric_name        text             NOT NULL,
    value              double precision NOT NULL,
    -- `window` is a reserved word in SQL, hence the longer name.
    evaluation_window  text             NOT NULL,
    sample_count       integer,
    evaluated_at       timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX quality_metrics_version_idx ON msd.quality_metrics (model_version_id, metric_name, evaluated_at);

-- Audit of every warm-up/model switch, activation and rollback.
CREATE TABLE msd.mode_transitions (
    id             bigserial PRIMARY KEY,
    strategy_id    text        NOT NULL,
    from_mode      text        CHECK (from_mode IN ('warmup', 'model')),
    to_mode        text        NOT NULL CHECK (to_mode IN ('warmup', 'model')),
    reason         text        NOT NULL,
    parameters     jsonb,
    model_version  integer,
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mode_transitions_strategy_idx ON msd.mode_transitions (strategy_id, at);

-- Exit-engine state keyed by position (not by asset: a new position must not inherit old peaks).
CREATE TABLE msd.position_exit_state (
    asset         text        NOT NULL,
    side          text        NOT NULL,
    position_key  text        NOT NULL,
    state         jsonb       NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asset, side, position_key)
);

-- Inputs that could not be used, kept byte for byte for inspection and replay.
CREATE TABLE msd.dead_letters (
    id           bigserial PRIMARY KEY,
    source       text        NOT NULL,
    reason       text        NOT NULL,
    detail       text,
    payload      bytea       NOT NULL,
    headers      jsonb,
    trace_id     text,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_received_idx ON msd.dead_letters (received_at);

-- Next due time of periodic jobs, so a restart neither skips nor repeats them.
CREATE TABLE msd.schedule_state (
    name         text PRIMARY KEY,
    next_run_at  timestamptz NOT NULL,
    last_run_at  timestamptz
);
