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

-- Pruning deletes a row only once it has been visible for the whole retention. Each pruning
-- run records when it ran and its snapshot's xmin as ended_below (every transaction below it
-- had ended, so its rows, if committed, were visible then); a later run deletes the rows whose
-- writers lie below ended_below of a run at least one retention old. A feed that completes a
-- read more often than that reads every row before it can go; one that cannot knows to reset.
CREATE TABLE change_log_prune_runs (
    at          timestamptz NOT NULL,
    ended_below bigint NOT NULL
);

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

-- A question's answers list (`/qa/questions/{id}/answers`) exists exactly while the question
-- does: log it when a question is created, deleted or renumbered, not only its product's list.
-- The change kind comes from the trigger's argument, as for atelier_changed_by_product.
CREATE FUNCTION atelier_changed_by_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM atelier_log_change(TG_ARGV[0], OLD.id, NULL);
    END IF;
    IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.id <> OLD.id) THEN
        PERFORM atelier_log_change(TG_ARGV[0], NEW.id, NULL);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER log_answers_change AFTER INSERT OR DELETE OR UPDATE OF id ON questions
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_by_id('answers');
