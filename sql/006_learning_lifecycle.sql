-- Learning lifecycle (issue 9): versions retired for degradation, the paused mode of a
-- strategy whose warm-up budget is spent (or that an operator paused), and each strategy's
-- current warm-up budget.

-- A version whose live quality degraded is retired: never again chosen as a fall-back, and
-- known as such after a restart (the degradation state was only in memory before).
ALTER TABLE msd.model_versions
    ADD COLUMN retired_at      timestamptz,
    ADD COLUMN retired_reason  text;

-- `paused`: no new entries (exits keep protecting open positions).
ALTER TABLE msd.mode_transitions DROP CONSTRAINT mode_transitions_from_mode_check;
ALTER TABLE msd.mode_transitions ADD CONSTRAINT mode_transitions_from_mode_check
    CHECK (from_mode IN ('warmup', 'model', 'paused'));
ALTER TABLE msd.mode_transitions DROP CONSTRAINT mode_transitions_to_mode_check;
ALTER TABLE msd.mode_transitions ADD CONSTRAINT mode_transitions_to_mode_check
    CHECK (to_mode IN ('warmup', 'model', 'paused'));
ALTER TABLE msd.mode_transitions DROP CONSTRAINT mode_transitions_event_check;
ALTER TABLE msd.mode_transitions ADD CONSTRAINT mode_transitions_event_check
    CHECK (event IN ('activation', 'rollback', 'deactivation', 'mode_change', 'pause', 'resume'));

-- A strategy that must not open new positions, and why. `budget` and `duration` pauses end
-- with a promotion or `msd-ctl resume`; an `operator` pause only with `msd-ctl resume`.
CREATE TABLE msd.strategy_pauses (
    strategy_id  text PRIMARY KEY,
    cause        text        NOT NULL CHECK (cause IN ('budget', 'duration', 'operator')),
    reason       text        NOT NULL,
    paused_at    timestamptz NOT NULL DEFAULT now()
);

-- When each strategy's current warm-up budget started: its spend counts warm-up calls decided
-- since then. A resume, or a return to warm-up from a model, starts a new one.
CREATE TABLE msd.warmup_budgets (
    strategy_id  text PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    reason       text        NOT NULL
);
