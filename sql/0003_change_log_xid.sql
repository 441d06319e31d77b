-- Exact gap resolution for the change feed. Each change_log row records the top-level
-- transaction id of its writer. A feed reads the log together with pg_current_snapshot() (one
-- statement, one snapshot): every row it did not see was written by a transaction that the
-- snapshot shows as not yet committed — one in its list of running transactions, or one at
-- or past its xmax. The feed asks again for those transactions' rows, by xid, until a later
-- snapshot shows them ended. No timer decides that a change will never come.
--
-- Rows written before this migration carry xid 0: their writers are long finished.

ALTER TABLE change_log ADD COLUMN xid bigint NOT NULL DEFAULT 0;
ALTER TABLE change_log ALTER COLUMN xid DROP DEFAULT;
-- A pending transaction's rows, in log order.
CREATE INDEX change_log_xid ON change_log (xid, seq);

-- Pruning also records the highest writer xid it deleted: a feed still waiting for that
-- transaction's rows knows they are gone.
ALTER TABLE change_log_pruned ADD COLUMN max_xid bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION atelier_log_change(change_kind text, change_id bigint, change_session text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    new_seq bigint;
BEGIN
    IF change_id IS NULL AND change_session IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO change_log (kind, id, session, xid)
        VALUES (change_kind, change_id, change_session, pg_current_xact_id()::text::bigint)
        RETURNING seq INTO new_seq;
    PERFORM pg_notify('atelier_changes', new_seq::text);
END $$;
