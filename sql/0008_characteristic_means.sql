-- A product's review meta shows each of its characteristics with the mean of its review
-- values over visible reviews (the contract's words): every visible review that rated the
-- characteristic, whichever product the review belongs to. The API never pairs a review with
-- another product's characteristic (POST /reviews refuses it), but a loaded data set or a
-- hand-made row can, and the start-up scan, a fill and the refresh must all agree on it.
--
-- The meta read finds a characteristic's values by characteristic, through this index, and
-- the change log names the characteristic's product as well as the review's: when such a row
-- is written, and when a review that rated another product's characteristic is reported or
-- un-reported. The index is built inside the migration's transaction (not CONCURRENTLY): on
-- a live full-scale database, writes of ratings wait for it (5 s for 19 million on a 2-core machine).
CREATE INDEX characteristic_reviews_by_characteristic
    ON characteristic_reviews (characteristic_id) INCLUDE (review_id, value);

-- A rating changes the review's product's meta, and the characteristic's product's when that
-- is another.
CREATE FUNCTION atelier_log_rating(review bigint, characteristic bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    review_product bigint := (SELECT product_id FROM reviews WHERE id = review);
    characteristic_product bigint := (SELECT product_id FROM characteristics WHERE id = characteristic);
BEGIN
    PERFORM atelier_log_change('reviews', review_product, NULL);
    IF characteristic_product IS DISTINCT FROM review_product THEN
        PERFORM atelier_log_change('reviews', characteristic_product, NULL);
    END IF;
END $$;

CREATE FUNCTION atelier_changed_characteristic_review() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM atelier_log_rating(OLD.review_id, OLD.characteristic_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM atelier_log_rating(NEW.review_id, NEW.characteristic_id);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER log_change ON characteristic_reviews;
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON characteristic_reviews
    FOR EACH ROW EXECUTE FUNCTION atelier_changed_characteristic_review();

-- Reporting a review (or taking the mark back) changes the means of every characteristic it
-- rated; those of its own product are logged by the reviews trigger already.
CREATE FUNCTION atelier_changed_review_visibility() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    other bigint;
BEGIN
    FOR other IN
        SELECT DISTINCT c.product_id
          FROM characteristic_reviews cr JOIN characteristics c ON c.id = cr.characteristic_id
         WHERE cr.review_id = NEW.id AND c.product_id <> NEW.product_id
    LOOP
        PERFORM atelier_log_change('reviews', other, NULL);
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER log_visibility_change AFTER UPDATE OF reported ON reviews
    FOR EACH ROW WHEN (OLD.reported IS DISTINCT FROM NEW.reported)
    EXECUTE FUNCTION atelier_changed_review_visibility();

-- As every logging trigger (0005_serving_role.sql): run as the owner, callable by no one else.
ALTER FUNCTION atelier_changed_characteristic_review() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION atelier_changed_review_visibility() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
REVOKE EXECUTE ON FUNCTION atelier_changed_characteristic_review(), atelier_changed_review_visibility(),
    atelier_log_rating(bigint, bigint)
    FROM PUBLIC;
