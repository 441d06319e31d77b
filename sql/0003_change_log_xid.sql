-- Exact gap resolution for the change feed. Each change_log row records the top-level
-- transaction id of its writer, taken before the row's sequence number is drawn. A feed that
-- reads the log together with pg_current_snapshot() (one statement, one snapshot) then knows,
-- for every sequence number below the highest it has seen, either that it was read or which
-- still-running transaction may yet commit it: it re-reads those transactions' rows by xid
-- until the snapshot says they have ended. No timer decides that a change will never come.
--
-- Rows written before this migration carry xid 0: their writers are long finished.

ALTER TABLE change_log ADD COLUMN xid bigint NOT NULL DEFAULT 0;
ALTER TABLE change_log ALTER COLUMN xid DROP DEFAULT;
CREATE INDEX change_log_xid ON change_log (xid);

CREATE OR REPLACE FUNCTION atelier_log_change(change_kind text, change_id bigint, change_session text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    writer bigint;
    new_seq bigint;
BEGIN
    IF change_id IS NULL AND change_session IS NULL THEN
        RETURN;
    END IF;
    -- The transaction id first (assigning one if the writer has none yet), the sequence
    -- number second: a number is never drawn by a transaction the snapshot cannot name.
    writer := pg_current_xact_id()::text::bigint;
    INSERT INTO change_log (kind, id, session, xid) VALUES (change_kind, change_id, change_session, writer)
        RETURNING seq INTO new_seq;
    PERFORM pg_notify('atelier_changes', new_seq::text);
END $$;
