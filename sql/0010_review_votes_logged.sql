-- A helpful vote changes a review's helpfulness and nothing else: its product's review lists
-- show it, its meta does not. The reviews trigger now logs such an update (any update of a
-- review that leaves every other column as it was) with the detail 'votes', so that every
-- instance, not only the one that took the vote, refreshes the lists and not the meta, whose
-- read is the costlier half on a product with thousands of reviews. Every other change of a
-- review is logged as before.
--
-- The detail is a column of its own, which a build that does not know it never reads: such a
-- build takes the row as any change of the product's reviews, as it always did, so instances
-- of both builds can follow one log during a rolling deploy.
--
-- Reviews are locked first: a write to them locks them and then, in its trigger, the log, so
-- a migration that held the log while waiting for reviews could deadlock with a vote in flight.
LOCK TABLE reviews IN ACCESS EXCLUSIVE MODE;
ALTER TABLE change_log ADD COLUMN detail text;

-- One way in for every log row: the three-argument form the other triggers call is now the
-- four-argument one without a detail.
CREATE FUNCTION atelier_log_change(change_kind text, change_id bigint, change_session text,
                                   change_detail text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    new_seq bigint;
BEGIN
    IF change_id IS NULL AND change_session IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO change_log (kind, id, session, detail, xid)
        VALUES (change_kind, change_id, change_session, change_detail,
                pg_current_xact_id()::text::bigint)
        RETURNING seq INTO new_seq;
    PERFORM pg_notify('atelier_changes', new_seq::text);
END $$;

CREATE OR REPLACE FUNCTION atelier_log_change(change_kind text, change_id bigint, change_session text)
RETURNS void LANGUAGE sql AS $$
    SELECT atelier_log_change(change_kind, change_id, change_session, NULL)
$$;

CREATE FUNCTION atelier_changed_review() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Compared as whole rows less helpfulness, so that a column added later counts as a
    -- change of the review.
    IF TG_OP = 'UPDATE' AND to_jsonb(NEW) - 'helpfulness' = to_jsonb(OLD) - 'helpfulness' THEN
        PERFORM atelier_log_change('reviews', NEW.product_id, NULL, 'votes');
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM atelier_log_change('reviews', OLD.product_id, NULL);
    END IF;
    IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.product_id IS DISTINCT FROM OLD.product_id) THEN
        PERFORM atelier_log_change('reviews', NEW.product_id, NULL);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER log_change ON reviews;
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON reviews
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_review();

ALTER FUNCTION atelier_changed_review() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
REVOKE EXECUTE ON FUNCTION atelier_log_change(text, bigint, text, text), atelier_changed_review()
    FROM PUBLIC;
