-- A helpful vote is logged with the review it was cast on: the detail `votes:<review id>`,
-- where migration 10 wrote `votes`. An instance then re-sorts the product's review lists it
-- holds by reading that review's sort key alone, instead of every visible review's (thousands
-- on some products: the costliest query of a vote, at full scale).
--
-- A build that knows only `votes` takes `votes:<id>` for a detail it does not know, and so
-- for any change of the product's reviews, as before migration 10: it refreshes the lists and
-- the meta from a whole read. Instances of both builds can follow one log during a rolling
-- deploy. Only the trigger function changes: no table is locked.

CREATE OR REPLACE FUNCTION atelier_changed_review() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Compared as whole rows less helpfulness, so that a column added later counts as a
    -- change of the review.
    IF TG_OP = 'UPDATE' AND to_jsonb(NEW) - 'helpfulness' = to_jsonb(OLD) - 'helpfulness' THEN
        PERFORM atelier_log_change('reviews', NEW.product_id, NULL, 'votes:' || NEW.id);
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

-- CREATE OR REPLACE resets what migration 10 set: the trigger runs as the owner, with a fixed
-- search path.
ALTER FUNCTION atelier_changed_review() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
