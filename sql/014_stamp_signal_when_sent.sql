-- 013's stamp_epoch fired (a PL/pgSQL call per row) on every UPDATE of msd.signals: marking rows
-- sent, recording failed attempts, expiring, voiding. Its UPDATE branch only acts when a row
-- becomes 'sent' while an epoch is set, so the update trigger now fires only then (the WHEN
-- clause is evaluated without calling the function). Same function, same effect; the INSERT
-- trigger is unchanged.
DROP TRIGGER stamp_epoch ON msd.signals;
CREATE TRIGGER stamp_epoch BEFORE INSERT ON msd.signals
    FOR EACH ROW EXECUTE FUNCTION msd.stamp_signal();
CREATE TRIGGER stamp_sent_epoch BEFORE UPDATE OF outbox_state ON msd.signals
    FOR EACH ROW
    WHEN (NEW.outbox_state = 'sent' AND OLD.outbox_state IS DISTINCT FROM 'sent' AND msd.writer_epoch() IS NOT NULL)
    EXECUTE FUNCTION msd.stamp_signal();
