-- Exit state format 2 (issue 8): msd owns a position's open time. Format 1 took `opened_at` from
-- the positions row's `created_at`, which position-manager sets once per asset and mode, forever
-- (CONTRACTS §3.5): for a reopened position it is the first position's open time, and the time
-- exit would close it at once. That value cannot be trusted, so an upgraded state counts its
-- holding time from the upgrade: a time exit comes later than it might, never early. Peaks,
-- ladder steps and the breakeven move are kept; the first row read after the upgrade fills in
-- what format 2 adds (row version, size, closed_at), and `opened_by` says where the time came from.
UPDATE msd.position_exit_state
   SET state = state || jsonb_build_object(
           'version', 2,
           'opened_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00',
           'opened_by', 'upgrade',
           'format_1_opened_at', state -> 'opened_at'),
       updated_at = now()
 WHERE state ->> 'version' = '1';
