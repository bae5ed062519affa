-- A training outcome's `at` is the event time of the attempt (when its data were read, by the
-- caller's clock), written by the code that records it (msd.store.versions.record_training_outcome),
-- never the time of the insert: the data-threshold count starts again from it (issue 12).
ALTER TABLE msd.training_outcomes ALTER COLUMN at DROP DEFAULT;
